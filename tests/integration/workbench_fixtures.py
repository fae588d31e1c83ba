"""A small real workspace for the workbench tests: COCO sample images, users of every role, a queued round."""
from __future__ import annotations

import json
from pathlib import Path

import app
from app.services.select import run_selection
from storage.importers import import_source
from storage.store import Store, init_workspace
from storage.users import add_user, get_user

SAMPLE_IMAGES = Path(app.__file__).parent / "sample" / "coco" / "val2017"
LABELS = ["cat", "dog", "person", "car", "bicycle", "pizza"]
PASSWORD = "correct-horse-7"
XSS = "<script>alert(1)</script>"
BOLD = "**bold**"
USERS = {"ann": "annotator", "bob": "annotator", "rev": "reviewer", "op": "operator"}


def caption(i: int) -> str:
    """Every caption carries HTML and Markdown that must be shown literally."""
    return f"Photo {i}: {XSS} and {BOLD} text"


def build_workspace(root: Path, *, pairs: int = 8, budget: int = 4, overlap: int = 1) -> Store:
    """A workspace at ``root``: ``pairs`` unlabelled pool pairs with real images, the users above, and a
    random first round of ``budget`` pairs queued with ``overlap``."""
    store = init_workspace(root, labels=LABELS)
    manifest = root / "manifest.jsonl"
    images = sorted(SAMPLE_IMAGES.glob("*.jpg"))[:pairs]
    manifest.write_text("".join(json.dumps({"id": f"p{i}", "image": str(img), "text": caption(i)}) + "\n"
                                for i, img in enumerate(images)), encoding="utf-8")
    import_source(store, manifest, "manifest", allow_absolute=True)
    with store.db.write() as s:
        for name, role in USERS.items():
            add_user(s, name, role, PASSWORD)
    if budget:
        with store.db.read() as s:
            operator = get_user(s, "op")
        run_selection(store, strategy="random", budget=budget, actor=operator, overlap=overlap)
    return store


def user(store: Store, name: str):
    with store.db.read() as s:
        return get_user(s, name)
