"""Read models of the workbench pages on a real SQLite file.

The workspace: labels cat/dog; annotators ann and bob, reviewer rev; pairs p0..p3. Round 1 (by rev)
selects p0 and p1 with overlap 2: ann and bob disagree on p0, ann flags p1. Outside the round ann
says p2 is a dog with a mismatched caption, and bob labels p3 and undoes it.
"""
from __future__ import annotations

from datetime import timedelta

import pytest

from storage.annotations import record_event
from storage.jobs import enqueue, recent_jobs
from storage.model_versions import add_model_version
from storage.models import Pair, utcnow
from storage.queue import SelectedPair, claim_next, create_round, submit, undo_last
from storage.read_models import (PairBrief, Vote, agreement_summary, annotator_activity, annotator_names,
                                 annotator_progress, browse_pairs, label_distribution, learning_curve, pair_votes,
                                 pairs_by_id, review_queue, round_history, round_numbers)
from storage.users import add_user

LEASE = 60.0


@pytest.fixture()
def ws(make_workspace):
    store = make_workspace(labels=["cat", "dog"])
    with store.db.write() as s:
        users = {name: add_user(s, name, role) for name, role in
                 (("bob", "annotator"), ("ann", "annotator"), ("rev", "reviewer"))}
        pairs = [Pair(external_id=f"p{i}", image_path=f"/img/{i}.jpg", image_sha256=str(i) * 64, text=f"caption {i}",
                      split=("pool", "pool", "train", "test")[i]) for i in range(4)]
        s.add_all(pairs)
        s.flush()
        ids = [p.id for p in pairs]
        create_round(s, strategy="random", selected=[SelectedPair(ids[0], 0.9), SelectedPair(ids[1], 0.5)],
                     params={}, overlap=2, created_by=users["rev"].id)
        ann, bob = users["ann"].id, users["bob"].id
        for user_id, kind, labels, verdict in ((ann, "submit", ["cat"], None), (bob, "submit", ["dog"], "match"),
                                               (ann, "flag", None, None)):
            submit(s, user_id, claim_next(s, user_id, lease_minutes=LEASE).queue_item_id, kind=kind, labels=labels,
                   verdict=verdict)
        record_event(s, pair_id=ids[2], user_id=ann, kind="submit", labels=["dog"], verdict="mismatch")
        record_event(s, pair_id=ids[3], user_id=bob, kind="submit", labels=["cat"])
        undo_last(s, bob, lease_minutes=LEASE)
    return store, ids, users


def test_annotator_names_and_progress(ws):
    store, _, users = ws
    with store.db.read() as s:
        assert annotator_names(s) == ["ann", "bob", "rev"]
        started = annotator_progress(s, users["ann"], utcnow() - timedelta(minutes=5))
        unstarted = annotator_progress(s, users["ann"], None)
    # 4 slots, 3 done; ann's submit, flag and the p2 submit
    assert (started.waiting, started.done_total, started.mine_last_hour, started.mine_this_session,
            started.mine_total) == (1, 3, 3, 3, 3)
    assert unstarted.mine_this_session == 0


def test_recent_jobs_of_given_kinds_newest_first(ws):
    store = ws[0]
    with store.db.write() as s:
        ids = {kind + str(i): enqueue(s, kind, {}).id for i, kind in enumerate(("export", "train", "export", "encode"))}
    with store.db.read() as s:
        assert [j.id for j in recent_jobs(s, kinds=("export",))] == [ids["export2"], ids["export0"]]
        assert [j.id for j in recent_jobs(s, kinds=("export",), limit=1)] == [ids["export2"]]
        assert [j.kind for j in recent_jobs(s, limit=2)] == ["encode", "export"]
    with store.db.write() as s:  # many other jobs since: the exports are still found (filtered in SQL)
        for _ in range(120):
            enqueue(s, "train", {})
    with store.db.read() as s:
        assert [j.id for j in recent_jobs(s, kinds=("export",))] == [ids["export2"], ids["export0"]]


def test_review_queue_votes_and_agreement(ws):
    store, ids, _ = ws
    with store.db.read() as s:
        queue = review_queue(s)
        first = review_queue(s, limit=1)
        votes = pair_votes(s, ids[0])
        undone = pair_votes(s, ids[3])
        summary = agreement_summary(s)
    assert [(item.pair_id, item.text, item.reasons) for item in queue] == [
        (ids[0], "caption 0", ["annotators disagree"]), (ids[1], "caption 1", ["flagged"]),
        (ids[2], "caption 2", ["caption mismatch"])]
    assert [item.pair_id for item in first] == [ids[0]]
    assert [(v.user, v.kind, v.labels, v.verdict) for v in votes] == [("ann", "submit", ("cat",), None),
                                                                      ("bob", "submit", ("dog",), "match")]
    assert all(isinstance(v, Vote) for v in votes) and undone == []
    assert summary.pairs == 1 and [(a.label, a.units, a.positives) for a in summary.labels] == [("cat", 1, 1),
                                                                                                ("dog", 1, 1)]


def test_round_history_curve_distribution_and_activity(ws):
    store, _, _ = ws
    with store.db.write() as s:
        add_model_version(s, path="m1.pt", parent_version=None, labelled_count=2, metrics={"validation": {"avg": 0.4}},
                          config={})
        add_model_version(s, path="m2.pt", parent_version=1, labelled_count=3,
                          metrics={"validation": {"avg": 0.5}, "test": {"i2t": 0.6, "t2i": 0.8, "avg": 0.7}}, config={})
    with store.db.read() as s:
        history = round_history(s)
        curve = learning_curve(s)
        distribution = label_distribution(s)
        activity = annotator_activity(s)
        numbers = round_numbers(s)
    created = history[0].pop("created (UTC)")
    assert history == [{"round": 1, "kind": "active", "strategy": "random", "budget": 2, "overlap": 2, "slots done": 3, "slots": 4,
                        "model version": None, "by": "rev", "priority": 1, "closed": False}]
    assert len(created) == len("2024-01-01 00:00")
    assert curve == [{"version": 1, "labelled": 2, "measured_on": "validation", "validation avg": 0.4},
                     {"version": 2, "labelled": 3, "measured_on": "test", "test i2t": 0.6, "test t2i": 0.8,
                      "test avg": 0.7}]
    assert distribution == {"cat": 0, "dog": 1}  # p0 is a tie, p3 was undone
    assert {(row["annotator"], row["events"]) for row in activity} == {("ann", 3), ("bob", 2)}
    assert numbers == [1]


def test_pairs_by_id_and_browse_filters(ws):
    store, ids, _ = ws
    with store.db.read() as s:
        assert pairs_by_id(s, [ids[1], 999]) == {ids[1]: PairBrief("/img/1.jpg", "caption 1")}
        rows, total = browse_pairs(s)
        assert total == 4 and [(r.external_id, r.status, r.labels, r.verdict, r.rounds) for r in rows] == [
            ("p0", "conflict", (), "match", (1,)), ("p1", "unlabelled", None, None, (1,)),
            ("p2", "labelled", ("dog",), "mismatch", ()), ("p3", "unlabelled", None, None, ())]

        def browse(**filters):
            found, count = browse_pairs(s, **filters)
            return [r.external_id for r in found], count

        assert browse(statuses=("conflict", "labelled")) == (["p0", "p2"], 2)
        assert browse(labels=("dog", "cat")) == (["p2"], 1)
        assert browse(round_number=1) == (["p0", "p1"], 2)
        assert browse(split="test") == (["p3"], 1)
        assert browse(limit=1) == (["p0"], 4)
        assert browse(limit=2, offset=2) == (["p2", "p3"], 4)
    with store.db.write() as s:  # a pair without any event has no state row and is unlabelled
        s.add(Pair(external_id="p4", image_path="/img/4.jpg", image_sha256="4" * 64, text="caption 4"))
    with store.db.read() as s:
        assert browse(statuses=("unlabelled",)) == (["p1", "p3", "p4"], 3)
        assert browse(statuses=("unlabelled", "conflict"), round_number=1) == (["p0", "p1"], 2)
