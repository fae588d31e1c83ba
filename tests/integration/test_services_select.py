"""``app.services.select``: which pairs a round may take, on a real SQLite workspace with real images."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.services.select import run_selection
from storage.errors import PairlabError
from storage.importers import import_source
from storage.models import Pair, Selection
from storage.store import init_workspace
from storage.users import get_user
from tests.integration.workbench_fixtures import SAMPLE_IMAGES


@pytest.fixture()
def store(tmp_path):
    """Six pool pairs, the first three labelled at import."""
    store = init_workspace(tmp_path / "ws", labels=["cat", "dog"])
    images = sorted(SAMPLE_IMAGES.glob("*.jpg"))[:6]
    rows = [{"id": f"p{i}", "image": str(img), "text": f"photo {i}", **({"labels": ["cat"]} if i < 3 else {})}
            for i, img in enumerate(images)]
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_source(store, manifest, "manifest", allow_absolute=True)
    yield store
    store.close()


def test_pairs_labelled_at_import_are_never_selected(store):
    with store.db.read() as s:
        system = get_user(s, "system")
    with pytest.raises(PairlabError, match="--budget: 4 exceeds the 3 selectable pairs"):
        run_selection(store, strategy="random", budget=4, actor=system)
    run_selection(store, strategy="random", budget=3, actor=system)
    with store.db.read() as s:
        chosen = set(s.scalars(select(Pair.external_id).join(Selection, Selection.pair_id == Pair.id)))
    assert chosen == {"p3", "p4", "p5"}


def test_pairs_labelled_in_earlier_rounds_or_by_review_are_never_selected(store):
    """``LABELLED_KINDS``: a submit (from an earlier round) or an adjudication takes a pair out of selection."""
    from storage.annotations import record_event
    from storage.users import add_user

    with store.db.write() as s:
        ann = add_user(s, "ann", "annotator", "password123")
        rev = add_user(s, "rev", "reviewer", "password123")
        ids = dict(s.execute(select(Pair.external_id, Pair.id)).all())
        record_event(s, pair_id=ids["p3"], user_id=ann.id, kind="submit", labels=["dog"])  # outside any round
        record_event(s, pair_id=ids["p4"], user_id=rev.id, kind="adjudicate", labels=["cat"])
        system = get_user(s, "system")
    report = run_selection(store, strategy="random", budget=1, actor=system)
    assert report.selected == 1
    with store.db.read() as s:
        chosen = set(s.scalars(select(Pair.external_id).join(Selection, Selection.pair_id == Pair.id)))
    assert chosen == {"p5"}
    with pytest.raises(PairlabError, match="no unlabelled pairs left in the pool that no round selected"):
        run_selection(store, strategy="random", budget=1, actor=system)  # p5 was selected by round 1
