"""Round priority and closing (``storage.queue``, ``app.services.rounds``) on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.services import rounds as service
from storage.errors import NotFoundError, PermissionDenied
from storage.models import Pair, QueueItem, Round
from storage.queue import SelectedPair, claim_next, create_round, queue_stats, submit
from tests.integration.workbench_fixtures import build_team, user

LEASE = 60.0


@pytest.fixture()
def store(tmp_path, database_url):
    store = build_team(tmp_path / "ws", pairs=6, database_url=database_url)
    yield store
    store.close()


who = user


def new_round(store, pair_indices):
    """A round over the pairs at ``pair_indices`` (by id order); its number."""
    with store.db.write() as s:
        ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))
        rnd = create_round(s, strategy="random", params={},
                           selected=[SelectedPair(ids[i], 0.0) for i in pair_indices])
        return rnd.number


def claim(store, name):
    with store.db.write() as s:
        found = claim_next(s, who(store, name).id, lease_minutes=LEASE)
        return None if found is None else (found.round_number, found.queue_item_id)


def finish(store, name, queue_item_id):
    with store.db.write() as s:
        submit(s, who(store, name).id, queue_item_id, labels=["cat"])


def test_claims_take_the_newest_round_first_then_the_priority_an_operator_sets(store):
    new_round(store, [0, 1])
    new_round(store, [2, 3])
    number, item = claim(store, "ann")
    assert number == 2  # newest first by default
    finish(store, "ann", item)
    service.set_priority(store, who(store, "op"), 1, 10)
    assert claim(store, "ann")[0] == 1
    assert claim(store, "bob")[0] == 1
    with store.db.read() as s:
        assert dict(s.execute(select(Round.number, Round.priority)).all()) == {1: 10, 2: 2}


def test_closing_a_round_releases_its_leases_and_stops_its_claims(store):
    new_round(store, [0, 1])
    new_round(store, [2, 3])
    assert claim(store, "ann")[0] == 2
    released = service.close_round(store, who(store, "op"), 2)
    assert released == 1
    with store.db.read() as s:
        rnd2 = s.scalar(select(Round).where(Round.number == 2))
        assert rnd2.closed_at is not None
        assert s.scalars(select(QueueItem.leased_by).where(QueueItem.round_id == rnd2.id)).all() == [None, None]
        stats = queue_stats(s)
    assert (stats.open_slots, stats.leased_slots) == (2, 0)  # only round 1's slots still count
    assert claim(store, "ann")[0] == 1  # the annotator moves on to the open round
    assert claim(store, "bob")[0] == 1
    assert claim(store, "op") is None  # round 1 is taken, round 2 is closed
    assert service.close_round(store, who(store, "op"), 2) == 0  # closing again changes nothing


def test_only_an_operator_orders_or_closes_rounds(store):
    new_round(store, [0])
    with pytest.raises(PermissionDenied):
        service.close_round(store, who(store, "ann"), 1)
    with pytest.raises(PermissionDenied):
        service.set_priority(store, who(store, "ann"), 1, 5)
    with pytest.raises(NotFoundError, match="round 7 does not exist"):
        service.close_round(store, who(store, "op"), 7)
