"""``pairlab demo``: a workspace built from the COCO sample bundled in the package.

The sample's images are split by image: a fifth keep their COCO category labels as the ``test``
split (so learning curves have ground truth), the rest become the unlabelled ``pool``.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from importlib.resources import files
from pathlib import Path

import numpy as np
from sqlalchemy import select

from app.services import run_selection
from storage.importers import import_source
from storage.models import Round
from storage.store import Store, init_workspace, open_store
from storage.users import add_user, get_user, list_users
from storage.workspace import CONFIG_NAME

log = logging.getLogger(__name__)

TEST_FRACTION = 0.2
SEED = 0


def sample_dir() -> Path:
    return Path(str(files("app") / "sample" / "coco"))


def write_demo_manifest(out: Path) -> list[str]:
    """Write the sample as a JSONL manifest (absolute image paths); return the label vocabulary in COCO order."""
    root = sample_dir()
    captions = json.loads((root / "annotations" / "captions_val2017.json").read_text(encoding="utf-8"))
    instances = json.loads((root / "annotations" / "instances_val2017.json").read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in instances["categories"]}
    tags: dict[int, set[str]] = {}
    for ann in instances["annotations"]:
        tags.setdefault(ann["image_id"], set()).add(names[ann["category_id"]])
    images = sorted(captions["images"], key=lambda im: im["id"])
    rng = np.random.default_rng(SEED)
    test_ids = {im["id"] for im in rng.permutation(images)[: round(TEST_FRACTION * len(images))]}
    files_by_id = {im["id"]: root / "val2017" / im["file_name"] for im in images}
    with out.open("w", encoding="utf-8") as fh:
        for cap in sorted(captions["annotations"], key=lambda a: a["id"]):
            row = {"id": f"coco:{cap['id']}", "image": str(files_by_id[cap["image_id"]]), "text": cap["caption"].strip()}
            if cap["image_id"] in test_ids:
                row.update(split="test", labels=sorted(tags.get(cap["image_id"], ())))
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return [c["name"] for c in sorted(instances["categories"], key=lambda c: c["id"])]


def build_demo_workspace(root: Path) -> Store:
    """Create the demo workspace at ``root`` on first run; reuse it afterwards."""
    if (root / CONFIG_NAME).is_file():
        log.info("reusing the demo workspace at %s", root)
        return open_store(root)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "coco-sample.jsonl"
        vocabulary = write_demo_manifest(manifest)
        store = init_workspace(root, labels=vocabulary)
        import_source(store, manifest, "manifest", allow_absolute=True)
    log.info("built the demo workspace at %s from %s", root, os.path.relpath(sample_dir()))
    return store


DEMO_OPERATOR = "demo"
DEMO_FIRST_BUDGET = 20


def prepare_demo(store: Store) -> str:
    """Make sure the demo has its operator (no password: it only signs in automatically on 127.0.0.1)
    and a first round to annotate; return the operator's name."""
    with store.db.write() as s:
        if DEMO_OPERATOR not in {u.name for u in list_users(s)}:
            add_user(s, DEMO_OPERATOR, "operator")
        operator = get_user(s, DEMO_OPERATOR)
        has_round = s.scalar(select(Round.id).limit(1)) is not None
    if not has_round:
        report = run_selection(store, strategy="random", budget=DEMO_FIRST_BUDGET, actor=operator, seed=SEED)
        log.info("demo: round %d selected %d pairs", report.round_number, report.selected)
    return DEMO_OPERATOR
