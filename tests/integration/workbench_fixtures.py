"""A small real workspace for the workbench tests: COCO sample images, users of every role, a queued round."""
from __future__ import annotations

import json
from pathlib import Path

import app
from app.services.select import run_selection
from app.services.settings import open_workspace
from storage.importers import import_source
from storage.models import Pair
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


def build_team(root: Path, *, pairs: int, database_url: str | None = None) -> Store:
    """A workspace (labels cat, dog) with annotators ann and bob, operator op, and ``pairs`` bare pairs p0...
    (no images: for queue, round and progress tests)."""
    store = init_workspace(root, labels=["cat", "dog"], database_url=database_url)
    with store.db.write() as s:
        for name in ("ann", "bob"):
            add_user(s, name, "annotator", "password123")
        add_user(s, "op", "operator", "password123")
        for i in range(pairs):
            s.add(Pair(external_id=f"p{i}", image_path=f"/img/{i}.jpg", image_sha256="0" * 64, text=f"t{i}"))
    return store


def user(store: Store, name: str):
    with store.db.read() as s:
        return get_user(s, name)


FAST_TRAIN = {"epochs": 2, "min_epochs": 1, "min_steps_per_epoch": 2, "dim": 32, "hidden": 64}


def build_trainable(root: Path, *, pool: int = 8, test: int = 0, database_url: str | None = None) -> Store:
    """A workspace that trains in seconds: ``pool`` labelled pool pairs and ``test`` labelled test pairs with
    real images, encoded; an operator ``op``; ``[train]`` set to ``FAST_TRAIN``."""
    from app.services.encode import encode_workspace

    store = init_workspace(root, labels=LABELS, database_url=database_url)
    set_table(root, "train", FAST_TRAIN)
    store.close()
    store = open_workspace(root)  # settings are parsed once per open store: this one reads FAST_TRAIN
    manifest = root / "manifest.jsonl"
    images = sorted(SAMPLE_IMAGES.glob("*.jpg"))[:pool + test]
    manifest.write_text("".join(json.dumps({"id": f"p{i}", "image": str(img), "text": f"photo {i}",
                                            "labels": [LABELS[i % 2]], "split": "pool" if i < pool else "test"})
                                + "\n" for i, img in enumerate(images)), encoding="utf-8")
    import_source(store, manifest, "manifest", allow_absolute=True)
    with store.db.write() as s:
        add_user(s, "op", "operator", PASSWORD)
    encode_workspace(store)
    return store


def set_table(root: Path, table: str, values: dict) -> None:
    """Replace the table ``[table]`` of ``root/pairlab.toml`` with ``values``."""
    import tomllib

    import tomli_w

    path = root / "pairlab.toml"
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    doc[table] = values
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
