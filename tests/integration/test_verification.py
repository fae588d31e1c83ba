"""Verification rounds (issue 15) on a real SQLite file and a throw-away PostgreSQL server: audited pairs are
queued again although selected before, a verification answer needs the caption verdict, a verdict-only
answer keeps the labels, and ``queue_verification`` leaves out pairs already waiting or judged since the audit.
"""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.services.audit import queue_verification
from storage.annotations import record_event
from storage.audit import AuditedPair, audit_component_values, audit_page, record_audit
from storage.errors import ConflictError, PairlabError, PermissionDenied
from storage.models import Event, Pair, QueueItem, Round, Selection
from storage.pair_state import pair_states
from storage.queue import SelectedPair, claim_next, close_round, create_round, submit
from tests.integration.workbench_fixtures import build_team, user

LEASE = 60.0


@pytest.fixture()
def team(tmp_path, database_url):
    store = build_team(tmp_path / "ws", pairs=8, database_url=database_url)
    with store.db.read() as s:
        ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))
    yield store, ids
    store.close()


def audit(store, ids) -> int:
    """An audit run ranking ``ids`` in the given order (rank 1 first), as ``pairlab audit`` stores it."""
    with store.db.write() as s:
        return record_audit(s, model_version_id=None, params={}, created_by=None,
                            scored=[AuditedPair(pid, rank, 1.0 - rank / 100, {"components": {}})
                                    for rank, pid in enumerate(ids, start=1)])


def claim(store, name):
    with store.db.write() as s:
        return claim_next(s, user(store, name).id, lease_minutes=LEASE)


def test_a_verification_round_retakes_a_selected_pair_and_active_rounds_still_never_do(team):
    store, ids = team
    with store.db.write() as s:
        create_round(s, strategy="random", selected=[SelectedPair(ids[0], 1.0)], params={})
    for _ in range(2):  # verified now, and again later
        with store.db.write() as s:
            create_round(s, kind="verification", strategy="audit", selected=[SelectedPair(ids[0], 0.9)], params={})
    with pytest.raises(ConflictError, match="another selection took some of these pairs"):
        with store.db.write() as s:
            create_round(s, strategy="random", selected=[SelectedPair(ids[0], 1.0)], params={})
    with store.db.read() as s:
        assert s.execute(select(Selection.kind, func.count()).where(Selection.pair_id == ids[0])
                         .group_by(Selection.kind).order_by(Selection.kind)).all() == [("active", 1),
                                                                                       ("verification", 2)]
        assert s.scalars(select(Round.kind).order_by(Round.number)).all() == ["active", "verification",
                                                                                "verification"]
    with pytest.raises(ValueError, match="round kind 'cleanup'"):
        with store.db.write() as s:
            create_round(s, kind="cleanup", strategy="audit", selected=[SelectedPair(ids[1], 0.9)], params={})


def test_a_verification_answer_needs_the_verdict_and_a_verdict_alone_keeps_the_labels(team):
    store, ids = team
    with store.db.write() as s:
        record_event(s, pair_id=ids[0], user_id=user(store, "op").id, kind="import", labels=["cat"])
        create_round(s, kind="verification", strategy="audit", selected=[SelectedPair(ids[0], 0.9)], params={})
    held = claim(store, "ann")
    assert held.pair_id == ids[0] and held.verification
    with pytest.raises(PairlabError, match=r"^verdict: this pair is in a verification round; say whether its "
                                           r"caption matches the image \(match, mismatch, unsure\)"):
        with store.db.write() as s:
            submit(s, user(store, "ann").id, held.queue_item_id, pair_id=ids[0], labels=["dog"], verdict=None)
    with store.db.read() as s:  # nothing written: no event, the slot still leased and open
        assert s.scalar(select(func.count(Event.id)).where(Event.kind == "submit")) == 0
        assert s.scalar(select(QueueItem.done_at).where(QueueItem.id == held.queue_item_id)) is None
    with store.db.write() as s:
        event = submit(s, user(store, "ann").id, held.queue_item_id, pair_id=ids[0], labels=[], verdict="mismatch")
        assert event.labels is None  # nothing marked in a verification round: labels not judged
    with store.db.read() as s:
        state = pair_states(s, [ids[0]])[ids[0]]
    assert state.labels == ("cat",) and state.verdict == "mismatch" and state.needs_review


def test_an_active_round_submit_without_a_verdict_is_still_accepted(team):
    store, ids = team
    with store.db.write() as s:
        create_round(s, strategy="random", selected=[SelectedPair(ids[0], 0.9)], params={})
    held = claim(store, "ann")
    assert not held.verification
    with store.db.write() as s:
        assert submit(s, user(store, "ann").id, held.queue_item_id, labels=["dog"]).labels == ["dog"]


def test_queue_verification_leaves_out_pairs_waiting_or_judged_since_the_audit(team):
    store, ids = team
    op = user(store, "op")
    run = audit(store, ids)
    first = queue_verification(store, actor=op, top=3, assign=["ann", "bob"], overlap=2)
    assert (first.round_number, first.queued, first.slots, first.in_open_round, first.verdict_given) == (1, 3, 6, 0, 0)
    with store.db.read() as s:
        rnd = s.scalar(select(Round).where(Round.number == 1))
        assert (rnd.kind, rnd.strategy, rnd.params["audit"]) == ("verification", "audit", run)
        chosen = s.execute(select(Selection.pair_id, Selection.explanation).order_by(Selection.rank)).all()
    assert [pid for pid, _ in chosen] == ids[:3] and chosen[0][1]["audit_rank"] == 1
    # both annotators answer the top pair; the other two still wait in the open round
    for name in ("ann", "bob"):
        held = claim(store, name)
        assert held.pair_id == ids[0]
        with store.db.write() as s:
            submit(s, user(store, name).id, held.queue_item_id, labels=[], verdict="mismatch")
    second = queue_verification(store, actor=op, top=5)
    assert (second.round_number, second.queued, second.in_open_round, second.verdict_given) == (2, 2, 2, 1)
    # once round 1 is closed its unanswered pairs can be queued again; the judged one waits for a newer audit
    with store.db.write() as s:
        close_round(s, 1)
        close_round(s, 2)
    third = queue_verification(store, actor=op, pair_ids=[ids[0], ids[1], ids[2]])
    assert (third.queued, third.in_open_round, third.verdict_given) == (2, 0, 1)
    newer = audit(store, ids)
    again = queue_verification(store, actor=op, run_id=newer, pair_ids=[ids[0]])
    assert again.queued == 1 and "1 pairs queued" in again.summary()
    with store.db.read() as s:
        page = audit_page(s, newer, limit=3, verdict="mismatch")
        assert [(row.pair_id, row.verdict) for row in page] == [(ids[0], "mismatch")]
        assert [row.pair_id for row in audit_page(s, newer, limit=2, verdict="none")] == ids[1:3]
        assert [row.rank for row in audit_page(s, newer, offset=2, limit=2)] == [3, 4]


def test_queue_verification_guards(team):
    store, ids = team
    op, ann = user(store, "op"), user(store, "ann")
    with pytest.raises(PairlabError, match="^audit: no audit has run yet"):
        queue_verification(store, actor=op, top=3)
    audit(store, ids)
    with pytest.raises(PairlabError, match="^--overlap: 2 annotators per pair needs at least 2 assigned, got 1$"):
        queue_verification(store, actor=op, top=3, assign=["ann"], overlap=2)
    with pytest.raises(PairlabError, match="^--top: must be >= 1$"):
        queue_verification(store, actor=op, top=0)
    with pytest.raises(PairlabError, match="^user 'zed' does not exist"):
        queue_verification(store, actor=op, top=3, assign=["zed"])
    with pytest.raises(PermissionDenied):
        queue_verification(store, actor=ann, top=3)
    with store.db.read() as s:
        assert s.scalar(select(func.count(Round.id))) == 0  # every refusal wrote nothing


def test_compact_and_older_full_breakdowns_read_back_the_same(team):
    """A run stores each pair's component values and ranks as lists named and weighted by the run's params;
    a run stored before that form keeps its full rows. Pages, the verification queue and the component
    values read both alike."""
    store, ids = team
    names, weights = ["mismatch", "inconsistency"], {"mismatch": 1.0, "inconsistency": 4.0}
    full = {"components": {"mismatch": {"value": 0.25, "rank": 0.5, "weight": 1.0},
                           "inconsistency": {"value": 0.75, "rank": 1.0, "weight": 4.0}}, "caption_rank": 0.1}
    compact = {"values": [0.25, 0.75], "ranks": [0.5, 1.0], "caption_rank": 0.1}
    with store.db.write() as s:
        old = record_audit(s, model_version_id=None, params={}, created_by=None,
                           scored=[AuditedPair(ids[0], 1, 0.9, full)])
        new = record_audit(s, model_version_id=None, params={"components": names, "weights": weights},
                           created_by=None, scored=[AuditedPair(ids[0], 1, 0.9, compact)])
    with store.db.read() as s:
        assert audit_page(s, old, limit=1)[0].breakdown == full
        assert audit_page(s, new, limit=1)[0].breakdown == full
        assert list(audit_component_values(s, old, "inconsistency")) == [(ids[0], 0.75)]
        assert list(audit_component_values(s, new, "inconsistency")) == [(ids[0], 0.75)]
        assert list(audit_component_values(s, new, "posterior")) == []
    with pytest.raises(ValueError, match="params\\['components'\\]"):
        with store.db.write() as s:
            record_audit(s, model_version_id=None, params={}, created_by=None,
                         scored=[AuditedPair(ids[1], 1, 0.9, compact)])
    operator = user(store, "op")
    queue_verification(store, actor=operator, top=1, run_id=new)
    with store.db.read() as s:
        (why,) = s.scalars(select(Selection.explanation).where(Selection.kind == "verification")).all()
    assert why["components"] == full["components"] and "values" not in why
