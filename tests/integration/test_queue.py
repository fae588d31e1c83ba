"""Queue semantics on a real SQLite file: overlap, assignment, expiry, skip, undo, late submissions."""
from __future__ import annotations

import time

import numpy as np
import pytest
from sqlalchemy import func, select

from storage.annotations import current_label, record_event
from storage.errors import ConflictError, PairlabError, StaleLeaseError
from storage.models import Event, Pair, Round
from storage.queue import (
    SelectedPair, Undone, claim_next, create_round, queue_stats, renew_lease, selectable_pair_ids, submit, undo_last,
)
from storage.store import init_workspace
from storage.users import add_user

LEASE = 60.0


@pytest.fixture()
def store(tmp_path):
    store = init_workspace(tmp_path / "ws", labels=["cat", "dog"])
    with store.db.write() as s:
        for name in ("ann", "bob", "cid"):
            add_user(s, name, "annotator", "password123")
        for i in range(4):
            s.add(Pair(external_id=f"p{i}", image_path=f"/img/{i}.jpg", image_sha256="0" * 64, text=f"t{i}"))
    yield store
    store.close()


def uid(store, name):
    from storage.users import get_user

    with store.db.read() as s:
        return get_user(s, name).id


def make_round(store, overlap=1, assignees=(), n=4):
    with store.db.write() as s:
        ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))[:n]
        create_round(s, strategy="random", selected=[SelectedPair(i, 1.0 - r / 10, {"rank": r}) for r, i in enumerate(ids)],
                     params={}, overlap=overlap, assignees=assignees)
    return ids


def claim(store, name, lease=LEASE):
    with store.db.write() as s:
        return claim_next(s, uid(store, name), lease_minutes=lease)


def test_claims_follow_rank_and_reclaim_returns_the_held_lease(store):
    ids = make_round(store)
    first = claim(store, "ann")
    assert first.pair_id == ids[0] and first.explanation == {"rank": 0}
    assert claim(store, "ann").queue_item_id == first.queue_item_id
    assert claim(store, "bob").pair_id == ids[1]


def test_overlap_gives_each_pair_to_distinct_annotators(store):
    ids = make_round(store, overlap=2, n=1)
    a, b = claim(store, "ann"), claim(store, "bob")
    assert a.pair_id == b.pair_id == ids[0] and a.queue_item_id != b.queue_item_id
    assert claim(store, "cid") is None
    with store.db.write() as s:
        submit(s, uid(store, "ann"), a.queue_item_id, labels=["cat"])
    assert claim(store, "ann") is None  # never the second slot of a pair already done


def test_assigned_slots_go_only_to_their_annotator(store):
    ids = make_round(store, assignees=[uid(store, "bob")], n=2)
    assert claim(store, "ann") is None
    assert claim(store, "bob").pair_id == ids[0]


def test_overlap_larger_than_assignees_is_refused(store):
    with pytest.raises(PairlabError, match="overlap 2 needs at least 2"):
        make_round(store, overlap=2, assignees=[uid(store, "bob")])


def test_expired_lease_returns_to_the_queue_and_a_late_submission_is_refused(store):
    make_round(store, n=1)
    stale = claim(store, "ann", lease=0.001)  # 60 ms
    time.sleep(0.2)
    fresh = claim(store, "bob")
    assert fresh is not None and fresh.queue_item_id == stale.queue_item_id
    with pytest.raises(StaleLeaseError, match="another annotator took it"):
        with store.db.write() as s:
            submit(s, uid(store, "ann"), stale.queue_item_id, pair_id=stale.pair_id, labels=["cat"])
    with store.db.write() as s:
        submit(s, uid(store, "bob"), fresh.queue_item_id, pair_id=fresh.pair_id, labels=["cat"])
    with store.db.read() as s:
        assert s.scalar(select(func.count(Event.id)).where(Event.kind == "submit")) == 1
        assert current_label(s, stale.pair_id).annotators == ("bob",)
        assert queue_stats(s).done_slots == 1


def test_an_expired_lease_nobody_took_is_refused_too(store):
    make_round(store, n=1)
    stale = claim(store, "ann", lease=0.001)
    time.sleep(0.2)
    with pytest.raises(StaleLeaseError, match="your lease on this pair expired"):
        with store.db.write() as s:
            submit(s, uid(store, "ann"), stale.queue_item_id, labels=["cat"])
    with store.db.read() as s:
        assert s.scalar(select(func.count(Event.id))) == 0


def test_a_second_tab_cannot_answer_a_pair_already_answered_nor_another_pair(store):
    """Two tabs of one person show the same lease; once tab A submitted, tab B's answer is refused and
    nothing is recorded, neither for that pair nor for the pair the person holds now."""
    ids = make_round(store, n=2)
    shown = claim(store, "ann")  # both tabs were handed this lease
    with store.db.write() as s:
        submit(s, uid(store, "ann"), shown.queue_item_id, pair_id=shown.pair_id, labels=["cat"])  # tab A
    now_held = claim(store, "ann")
    assert now_held.pair_id == ids[1]
    with pytest.raises(StaleLeaseError, match="already answered by you"):
        with store.db.write() as s:
            submit(s, uid(store, "ann"), shown.queue_item_id, pair_id=shown.pair_id, labels=["dog"])  # tab B
    with pytest.raises(StaleLeaseError, match="not a slot of pair"):
        with store.db.write() as s:  # a screen whose pair and slot disagree is never recorded at all
            submit(s, uid(store, "ann"), now_held.queue_item_id, pair_id=shown.pair_id, labels=["dog"])
    with store.db.read() as s:
        assert [(e.pair_id, e.labels) for e in s.scalars(select(Event))] == [(shown.pair_id, ["cat"])]


def test_renew_lease_extends_only_a_live_lease_of_its_holder(store):
    make_round(store, n=2)
    got = claim(store, "ann", lease=0.01)
    with store.db.write() as s:
        assert renew_lease(s, uid(store, "bob"), got.queue_item_id, lease_minutes=LEASE) is None
        expires = renew_lease(s, uid(store, "ann"), got.queue_item_id, lease_minutes=LEASE)
    assert expires is not None and expires > got.lease_expires_at
    assert claim(store, "bob").queue_item_id != got.queue_item_id  # still ann's after the short lease ran out
    short = claim(store, "bob", lease=0.001)
    time.sleep(0.2)
    with store.db.write() as s:  # an expired lease is never revived: someone may hold the slot now
        assert renew_lease(s, uid(store, "bob"), short.queue_item_id, lease_minutes=LEASE) is None


def test_skip_hands_the_pair_to_someone_else_not_back(store):
    make_round(store, n=1)
    got = claim(store, "ann")
    with store.db.write() as s:
        submit(s, uid(store, "ann"), got.queue_item_id, kind="skip")
    assert claim(store, "ann") is None
    assert claim(store, "bob").pair_id == got.pair_id


def test_undo_retracts_the_last_submission_and_releases_its_slot_back(store):
    ids = make_round(store, n=2)
    first = claim(store, "ann")
    with store.db.write() as s:
        submit(s, uid(store, "ann"), first.queue_item_id, labels=["cat"])
    second = claim(store, "ann")
    assert second.pair_id == ids[1]
    with store.db.write() as s:
        assert undo_last(s, uid(store, "ann"), lease_minutes=LEASE) == Undone(first.pair_id, "submit", ("cat",))
    with store.db.read() as s:
        assert current_label(s, first.pair_id).labels is None
        assert s.scalar(select(func.count(Event.id))) == 2  # nothing deleted
    again = claim(store, "ann")
    assert again.queue_item_id == first.queue_item_id  # the undone pair is back in the annotator's hands
    assert claim(store, "bob").pair_id == ids[1]  # the lease ann held before is released


def test_unknown_label_is_refused_and_nothing_written(store):
    make_round(store, n=1)
    got = claim(store, "ann")
    with pytest.raises(PairlabError, match="unknown label 'zebra'"):
        with store.db.write() as s:
            submit(s, uid(store, "ann"), got.queue_item_id, labels=["zebra"])
    with store.db.read() as s:
        assert s.scalar(select(func.count(Event.id))) == 0


def test_an_annotator_who_did_one_slot_of_a_pair_never_gets_its_other_slot(store):
    """Overlap 2 with the second slot still free: after submitting the first, ann moves on to the next pair."""
    first, second = make_round(store, overlap=2, n=2)
    got = []
    while (c := claim(store, "ann")) is not None:
        got.append(c.pair_id)
        with store.db.write() as s:
            submit(s, uid(store, "ann"), c.queue_item_id, labels=["cat"])
    assert got == [first, second]
    assert [claim(store, "bob").pair_id, claim(store, "cid").pair_id] == [first, second]


def test_selectable_pairs_are_unselected_unannotated_pairs_of_the_given_splits(store):
    with store.db.write() as s:
        ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))
        s.get(Pair, ids[3]).split = "test"
        create_round(s, strategy="random", selected=[SelectedPair(ids[0], 1.0)], params={})
        record_event(s, pair_id=ids[1], user_id=uid(store, "ann"), kind="import", labels=["cat"])
        record_event(s, pair_id=ids[2], user_id=uid(store, "ann"), kind="submit", labels=["dog"])
    with store.db.read() as s:
        found = selectable_pair_ids(s, splits=("pool", "train"), labelled_by=("submit", "adjudicate"))
        assert found.dtype == np.int64 and found.tolist() == [ids[1]]  # only the given kinds exclude a pair
        assert selectable_pair_ids(s, splits=("pool", "test"), labelled_by=("submit",)).tolist() == [ids[1], ids[3]]
        assert selectable_pair_ids(s, splits=("pool",), labelled_by=("submit", "import")).tolist() == []
        with pytest.raises(ValueError, match="split 'validation'; allowed: pool, train, val, test"):
            selectable_pair_ids(s, splits=("validation",), labelled_by=())
        with pytest.raises(ValueError, match="event kind 'label'"):
            selectable_pair_ids(s, splits=("pool",), labelled_by=("label",))


def test_a_pair_selected_by_a_concurrent_round_is_a_conflict_and_nothing_is_recorded(store):
    first = make_round(store, n=1)[0]
    with store.db.read() as s:
        rounds = s.scalar(select(func.count(Round.id)))
    with pytest.raises(ConflictError, match="another selection took some of these pairs"):
        with store.db.write() as s:  # the database's unique pair per selection, not a check in Python
            create_round(s, strategy="random", selected=[SelectedPair(first + 1, 1.0), SelectedPair(first, 0.5)],
                         params={})
    with store.db.read() as s:
        assert s.scalar(select(func.count(Round.id))) == rounds
