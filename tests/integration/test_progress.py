"""Per-annotator and per-round progress (``storage.read_models``), and the import never disagreeing in Review,
on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from storage import read_models
from storage.annotations import record_event
from storage.models import Event, Pair
from storage.queue import SelectedPair, claim_next, close_round, create_round, submit
from tests.integration.workbench_fixtures import build_team, user

T0 = datetime(2026, 3, 1, 9, 0, 0)


@pytest.fixture()
def store(tmp_path, database_url):
    store = build_team(tmp_path / "ws", pairs=4, database_url=database_url)
    yield store
    store.close()


who = user


def answer(store, name, labels, at):
    """Claim the next slot as ``name``, submit ``labels`` and date the event ``at``; the pair id."""
    uid = who(store, name).id
    with store.db.write() as s:
        claim = claim_next(s, uid, lease_minutes=60)
        event = submit(s, uid, claim.queue_item_id, labels=labels, verdict="match")
        s.execute(update(Event).where(Event.id == event.id).values(created_at=at))
        return claim.pair_id


def seconds(n):
    return T0 + timedelta(seconds=n)


def test_annotator_progress_counts_slots_pace_and_agreement(store):
    with store.db.write() as s:
        ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))[:3]
        create_round(s, strategy="random", params={}, overlap=2, selected=[SelectedPair(i, 0.0) for i in ids])
    answer(store, "ann", ["cat"], seconds(0))
    answer(store, "bob", ["cat"], seconds(5))  # agrees with ann
    answer(store, "ann", ["cat"], seconds(30))
    answer(store, "bob", ["dog"], seconds(25))  # a tie: the consensus has neither label
    answer(store, "ann", ["dog"], seconds(90))  # nobody else labelled this pair: not compared
    with store.db.write() as s:  # bob holds a lease on the third pair
        claim_next(s, who(store, "bob").id, lease_minutes=60)
        # a later answer after a break of an hour: the gap is not counted as time on a pair
        late = record_event(s, pair_id=ids[0], user_id=who(store, "bob").id, kind="flag")
        s.execute(update(Event).where(Event.id == late.id).values(created_at=seconds(25 + 3600)))

    with store.db.read() as s:
        table = {row.name: row for row in read_models.annotator_progress_table(s)}
        rounds = read_models.round_progress_table(s)
        own = read_models.own_progress(s, who(store, "ann"))
    assert set(table) == {"ann", "bob"}  # op has no slots and no answers
    ann, bob = table["ann"], table["bob"]
    assert (ann.done, ann.assigned, bob.done, bob.assigned) == (3, 3, 2, 3)
    assert ann.seconds_per_pair == pytest.approx(45.0, abs=0.01)  # gaps 30 s and 60 s
    assert bob.seconds_per_pair == pytest.approx(20.0, abs=0.01)  # the gap of an hour is a break
    assert (ann.agreement, ann.compared) == (0.5, 2) and (bob.agreement, bob.compared) == (0.5, 2)
    assert own == ann

    [only] = rounds
    assert (only.name, only.done, only.assigned, only.compared, only.agreement) == ("round 1", 5, 6, 4, 0.5)
    assert only.seconds_per_pair == pytest.approx((30 + 60 + 20) / 3, abs=0.01)


def test_undone_answers_do_not_count_towards_agreement_and_closed_rounds_say_so(store):
    with store.db.write() as s:
        ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))[:1]
        create_round(s, strategy="random", params={}, overlap=2, selected=[SelectedPair(i, 0.0) for i in ids])
    answer(store, "ann", ["cat"], seconds(0))
    answer(store, "bob", ["dog"], seconds(10))
    with store.db.write() as s:  # bob retracts and relabels outside the queue: now they agree
        last = s.scalar(select(Event).where(Event.user_id == who(store, "bob").id))
        record_event(s, pair_id=ids[0], user_id=who(store, "bob").id, kind="undo", undoes_id=last.id)
        record_event(s, pair_id=ids[0], user_id=who(store, "bob").id, kind="submit", labels=["cat"])
        close_round(s, 1)
    with store.db.read() as s:
        table = {row.name: row for row in read_models.annotator_progress_table(s)}
        [rnd] = read_models.round_progress_table(s)
    assert (table["bob"].agreement, table["bob"].compared) == (1.0, 1)
    assert rnd.name == "round 1 (closed)"


def test_the_import_never_shows_up_as_a_disagreeing_annotator_in_review(store):
    system = who(store, "system")
    with store.db.write() as s:
        pid = s.scalar(select(Pair.id).order_by(Pair.id))
        record_event(s, pair_id=pid, user_id=system.id, kind="import", labels=["cat"])
        record_event(s, pair_id=pid, user_id=who(store, "ann").id, kind="submit", labels=["dog"], verdict="match")
    with store.db.read() as s:
        assert [item.pair_id for item in read_models.review_queue(s)] == []
        summary = read_models.agreement_summary(s)
    assert summary.pairs == 0  # one human: nothing overlaps
