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
