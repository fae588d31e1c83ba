"""``app.services.annotate``: the workbench's annotation and review actions check roles server-side."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.services import annotate
from storage.errors import PermissionDenied
from storage.models import Event, Pair
from tests.integration.workbench_fixtures import build_workspace, user


@pytest.fixture()
def store(tmp_path):
    store = build_workspace(tmp_path / "ws", pairs=3, budget=2)
    yield store
    store.close()


def event_count(store) -> int:
    with store.db.read() as s:
        return s.scalar(select(func.count(Event.id)))


def test_adjudication_refuses_an_annotator(store):
    """Reviewers and operators may adjudicate (``storage.users.PERMISSIONS``); an annotator may not."""
    with store.db.read() as s:
        pair_id = s.scalar(select(Pair.id).limit(1))
    before = event_count(store)
    with pytest.raises(PermissionDenied, match="user 'ann' .* may not review"):
        annotate.adjudicate(store, user(store, "ann"), pair_id, labels=["cat"], verdict="match")
    assert event_count(store) == before
    annotate.adjudicate(store, user(store, "rev"), pair_id, labels=["cat"], verdict="match")
    assert event_count(store) == before + 1
