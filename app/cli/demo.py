"""``pairlab demo``: a workspace built from the COCO sample bundled in the package.

The sample's images are split by image: a fifth keep their COCO category labels as the ``test``
split (ground truth for the learning curve), a few more keep them as the ``train`` split (the seed
set the first model learns from), and the rest become the unlabelled ``pool``. The first run
imports, encodes, trains and selects a first ``ascmr`` round.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.services.encode import encode_workspace
from app.services.select import run_selection
from app.services.settings import open_workspace
from app.services.train import train_workspace
from storage.importers import import_source
from storage.store import Store, init_workspace
from storage.users import add_user, get_user
from storage.workspace import CONFIG_NAME

log = logging.getLogger(__name__)

TEST_FRACTION = 0.2
SEED_FRACTION = 0.15
SEED = 0
DEMO_OPERATOR = "demo"
DEMO_FIRST_BUDGET = 20
COMPLETE_MARKER = ".demo-complete"  # written last: a workspace without it was interrupted


def sample_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "sample" / "coco"


@dataclass(frozen=True)
class SampleCaption:
    caption_id: int
    image_id: int
    image: Path
    text: str
    labels: tuple[str, ...]   # the image's COCO categories


def sample_captions() -> tuple[list[SampleCaption], list[str]]:
    """Every caption of the bundled sample (caption-id order) and the 80 category names in COCO order."""
    root = sample_dir()
    captions = json.loads((root / "annotations" / "captions_val2017.json").read_text(encoding="utf-8"))
    instances = json.loads((root / "annotations" / "instances_val2017.json").read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in instances["categories"]}
    tags: dict[int, set[str]] = {}
    for ann in instances["annotations"]:
        tags.setdefault(ann["image_id"], set()).add(names[ann["category_id"]])
    files = {im["id"]: root / "val2017" / im["file_name"] for im in captions["images"]}
    rows = [SampleCaption(c["id"], c["image_id"], files[c["image_id"]], c["caption"].strip(),
                          tuple(sorted(tags.get(c["image_id"], ()))))
            for c in sorted(captions["annotations"], key=lambda a: a["id"])]
    return rows, [c["name"] for c in sorted(instances["categories"], key=lambda c: c["id"])]


def write_demo_manifest(out: Path) -> list[str]:
    """Write the sample as a JSONL manifest (absolute image paths); return the label vocabulary in COCO order."""
    rows, vocabulary = sample_captions()
    order = list(np.random.default_rng(SEED).permutation(sorted({r.image_id for r in rows})))
    n_test, n_seed = round(TEST_FRACTION * len(order)), round(SEED_FRACTION * len(order))
    split = {**{i: "test" for i in order[:n_test]}, **{i: "train" for i in order[n_test:n_test + n_seed]}}
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            record = {"id": f"coco:{row.caption_id}", "image": str(row.image), "text": row.text}
            if row.image_id in split:
                record.update(split=split[row.image_id], labels=list(row.labels))
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return vocabulary


def build_demo_workspace(root: Path) -> Store:
    """Create the demo workspace at ``root`` on first run (import, encode, train, first ``ascmr`` round);
    reuse it afterwards. Its operator ``demo`` has no password: it only signs in automatically on 127.0.0.1."""
    if (root / COMPLETE_MARKER).is_file():
        log.info("reusing the demo workspace at %s", root)
        return open_workspace(root)
    if (root / CONFIG_NAME).is_file():  # an earlier build was interrupted
        log.warning("the demo workspace at %s is incomplete; rebuilding it", root)
        shutil.rmtree(root)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "coco-sample.jsonl"
        vocabulary = write_demo_manifest(manifest)
        store = init_workspace(root, labels=vocabulary)
        import_source(store, manifest, "manifest", allow_absolute=True)
    with store.db.write() as s:
        add_user(s, DEMO_OPERATOR, "operator")
    with store.db.read() as s:
        operator = get_user(s, DEMO_OPERATOR)
    log.info("demo: encoding the sample")
    encode_workspace(store)
    log.info("demo: training the first model")
    info = train_workspace(store)
    report = run_selection(store, strategy="ascmr", budget=DEMO_FIRST_BUDGET, actor=operator, seed=SEED)
    log.info("demo: model v%d, round %d selected %d pairs", info.version, report.round_number, report.selected)
    (root / COMPLETE_MARKER).write_text("built\n", encoding="utf-8")
    return store
