"""The Clean-up page through Streamlit's AppTest on a real SQLite workspace with real images: the latest
audit's ranking a page at a time with breakdown and evidence, the verdict filter, sending checked pairs to a
verification round, and the operator's Run audit job."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.web import state
from app.web.pages import cleanup
from app.web.runtime import AUTO_LOGIN_ENV, WORKSPACE_ENV
from storage.audit import AuditedPair, record_audit
from storage.jobs import recent_jobs
from storage.models import Pair, Round, Selection
from storage.queue import claim_next, submit
from tests.integration.test_app_pages import button, page
from tests.integration.workbench_fixtures import build_workspace, user


@pytest.fixture()
def audited(tmp_path, monkeypatch):
    """8 pairs with real images, no round, and an audit that ranks them p7, p6, ... p0 (p7 with evidence)."""
    store = build_workspace(tmp_path / "ws", budget=0)
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    monkeypatch.delenv(AUTO_LOGIN_ENV, raising=False)
    with store.db.read() as s:
        pairs = s.execute(select(Pair.id, Pair.external_id, Pair.image_path).order_by(Pair.id.desc())).all()
    scored = []
    for rank, (pid, _, _) in enumerate(pairs, start=1):
        breakdown = {"components": {"mismatch": {"value": 0.9 - rank / 10, "rank": 1 - rank / 10, "weight": 1.0},
                                    "inconsistency": {"value": 0.5, "rank": 1 - rank / 10, "weight": 4.0}},
                     "caption_rank": 0.25, "image_rank": 0.5}
        if rank == 1:
            breakdown["best_caption"] = {"id": pairs[1].external_id, "text": "a better caption for this photo"}
            breakdown["best_image"] = {"id": pairs[2].external_id, "image": pairs[2].image_path}
        scored.append(AuditedPair(pid, rank, 1.0 - rank / 10, breakdown))
    with store.db.write() as s:
        run = record_audit(s, model_version_id=None, params={"model_version": 1}, scored=scored, created_by=None)
    yield store, run, [pid for pid, _, _ in pairs]
    store.close()


def pick(run, pair_id) -> str:
    return state.item_key(state.CLEANUP_PICK, run, pair_id)


def test_a_reviewer_pages_the_ranking_and_sends_checked_pairs_to_verification(audited, monkeypatch):
    store, run, ranked = audited
    monkeypatch.setattr(cleanup, "PAGE_SIZE", 3)
    at = page("cleanup", user(store, "rev"))
    assert not at.exception
    assert "Run audit" not in [b.label for b in at.button]  # operators only
    assert [c.label for c in at.checkbox] == ["Rank 1", "Rank 2", "Rank 3"]
    shown = [t.value for t in at.text]
    assert "a better caption for this photo (p6)" in shown  # the evidence of rank 1
    assert list(at.dataframe[0].value["component"]) == ["mismatch", "inconsistency"]
    assert list(at.dataframe[0].value["pool rank"]) == [0.9, 0.9]
    assert ("25% of the other captions match its image better than its own; 50% of the other images match its "
            "caption better.") in [c.value for c in at.caption]
    button(at, "Next").click().run()
    assert [c.label for c in at.checkbox] == ["Rank 4", "Rank 5", "Rank 6"]
    button(at, "Previous").click().run()
    at.checkbox(key=pick(run, ranked[0])).check()
    at.checkbox(key=pick(run, ranked[2])).check()
    at.multiselect(key=state.CLEANUP_ASSIGN).set_value(["ann"])
    at.button[-1].click().run()  # the form's submit button
    assert not at.exception
    assert at.success[0].value.startswith("Sent to verification: verification round 1: 2 pairs queued (2 slots)")
    with store.db.read() as s:
        rnd = s.scalar(select(Round))
        chosen = s.scalars(select(Selection.pair_id).order_by(Selection.rank)).all()
    assert rnd.kind == "verification" and chosen == [ranked[0], ranked[2]]
    assert not at.checkbox(key=pick(run, ranked[0])).value  # unchecked once sent


def test_the_verdict_filter_shows_the_pairs_with_that_verdict(audited):
    store, run, ranked = audited
    at = page("cleanup", user(store, "rev"))
    at.checkbox(key=pick(run, ranked[1])).check()
    at.button[-1].click().run()
    ann = user(store, "ann")
    with store.db.write() as s:
        held = claim_next(s, ann.id, lease_minutes=5)
        submit(s, ann.id, held.queue_item_id, labels=[], verdict="mismatch")
    at.segmented_control(key=state.CLEANUP_VERDICT).set_value("mismatch").run()
    assert not at.exception
    assert [c.label for c in at.checkbox] == ["Rank 2"]
    assert any("verdict: mismatch" in c.value for c in at.caption)
    at.segmented_control(key=state.CLEANUP_VERDICT).set_value("none").run()
    assert "Rank 2" not in [c.label for c in at.checkbox] and len(at.checkbox) == 7
    at.segmented_control(key=state.CLEANUP_VERDICT).set_value("unsure").run()
    assert at.info[0].value == "No pair of this audit has that verdict."


def test_sending_nothing_checked_says_so_and_queues_nothing(audited):
    store, _, _ = audited
    at = page("cleanup", user(store, "op"))
    at.button[-1].click().run()
    assert at.warning[0].value == "Check the pairs to send first."
    with store.db.read() as s:
        assert s.scalar(select(Round)) is None


def test_an_operator_runs_an_audit_as_one_job(audited):
    store, _, _ = audited
    at = page("cleanup", user(store, "op"))
    button(at, "Run audit").click().run()
    button(at, "Run audit").click().run()
    assert not at.exception
    with store.db.read() as s:
        jobs = [j for j in recent_jobs(s) if j.kind == "audit"]
    assert len(jobs) == 1 and jobs[0].status == "queued" and jobs[0].params == {"actor": "op"}
    assert at.session_state[state.CLEANUP_JOB] == jobs[0].id  # the page watches it (widgets.job_panel)


def test_without_an_audit_the_page_says_how_to_get_one(tmp_path, monkeypatch):
    store = build_workspace(tmp_path / "ws", budget=0)
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    try:
        at = page("cleanup", user(store, "rev"))
        assert not at.exception and "No mismatch audit yet" in at.info[0].value
    finally:
        store.close()


def test_annotate_starts_a_verification_pair_with_no_verdict_chosen(audited):
    store, run, ranked = audited
    at = page("cleanup", user(store, "op"))
    at.checkbox(key=pick(run, ranked[0])).check()
    at.button[-1].click().run()
    ann = page("annotate", user(store, "ann"))
    button(ann, "Start annotating").click().run()
    assert not ann.exception
    claim = ann.session_state[state.ANN_CLAIM]
    assert claim.pair_id == ranked[0] and claim.verification
    assert ann.session_state[state.ANN_ANSWER].verdict is None  # an active round pre-sets "match"
    assert ann.expander[0].label == "Why flagged (mismatch audit)"
    assert ann.expander[0].caption[0].value == "Verification round 1, rank 1"
