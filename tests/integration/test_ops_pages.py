"""The Rounds page's round controls and progress, and the Export page's earlier downloads, through AppTest on a
real SQLite workspace with real images."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from app.jobs import launch as jobs
from app.jobs.worker import run_worker
from app.services.select import run_selection
from app.web import state
from app.web.runtime import AUTO_LOGIN_ENV, WORKSPACE_ENV
from storage.models import QueueItem, Round
from storage.queue import claim_next, submit
from tests.integration.test_app_pages import button, page
from tests.integration.workbench_fixtures import build_workspace, user


@pytest.fixture()
def store(tmp_path, monkeypatch):
    store = build_workspace(tmp_path / "ws")
    monkeypatch.setenv(WORKSPACE_ENV, str(store.root))
    monkeypatch.delenv(AUTO_LOGIN_ENV, raising=False)
    yield store
    store.close()


def test_rounds_page_orders_and_closes_rounds_and_shows_progress(store):
    run_selection(store, strategy="random", budget=2, actor=user(store, "op"))  # round 2 beside round 1
    ann = user(store, "ann")
    with store.db.write() as s:
        claim = claim_next(s, ann.id, lease_minutes=30)
        submit(s, ann.id, claim.queue_item_id, labels=["cat"], verdict="match")
        claim_next(s, ann.id, lease_minutes=30)  # a lease the close releases
    at = page("rounds", user(store, "op"))
    assert not at.exception
    people, rounds = at.dataframe[1].value, at.dataframe[2].value
    assert list(people["annotator"]) == ["ann"] and list(people["done / assigned"]) == ["1 / 2"]
    assert list(rounds["round"]) == ["round 2", "round 1"]
    assert list(rounds["done / assigned"]) == ["1 / 2", "0 / 4"]

    at.selectbox(key=state.ROUNDS_CONTROL).set_value(1).run()
    at.number_input[-1].set_value(9)
    button(at, "Set priority").click().run()
    assert not at.exception and "Round 1 now has priority 9." in [m.value for m in at.success]
    at.selectbox(key=state.ROUNDS_CONTROL).set_value(2).run()
    button(at, "Close round").click().run()
    assert not at.exception and "Round 2 closed; 1 lease(s) released." in [m.value for m in at.success]
    with store.db.read() as s:
        assert dict(s.execute(select(Round.number, Round.priority)).all()) == {1: 9, 2: 2}
        assert s.scalar(select(Round.closed_at).where(Round.number == 2)) is not None
        open_leases = select(QueueItem.id).where(QueueItem.leased_by.is_not(None), QueueItem.done_at.is_(None))
        assert s.scalars(open_leases).all() == []
    assert list(at.dataframe[2].value["round"]) == ["round 2 (closed)", "round 1"]
    # a closed round is not offered again
    assert at.selectbox(key=state.ROUNDS_CONTROL).options == ["round 1 (priority 9)"]


def test_export_page_offers_earlier_exports_without_reading_them_on_a_rerun(store, monkeypatch):
    op = user(store, "op")
    for fmt in ("coco", "label-studio"):
        jobs.launch_export(store, op, fmt=fmt)
        assert run_worker(store.root, once=True) == 1
    files = sorted(p.name for p in (store.root / "exports").iterdir())
    assert [name.split(".", 1)[1] for name in files] == ["coco.json", "label-studio.json"]  # distinct names
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real(self))
    at = page("export", op)
    assert not at.exception
    assert sorted(b.label for b in at.download_button) == [f"Download {name}" for name in files]
    at.run()
    assert not at.exception and reads == []  # read only when a download is clicked
    (store.root / "exports" / files[0]).unlink()
    at.run()
    assert [b.label for b in at.download_button] == [f"Download {files[1]}"]
    assert "The file is no longer in the workspace." in [c.value for c in at.caption]
