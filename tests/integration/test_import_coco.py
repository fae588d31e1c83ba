"""COCO captions import on the real coco-mini sample (DESIGN §2)."""
from __future__ import annotations

import json

from sqlalchemy import func, select

from storage.annotations import current_labels
from storage.importers import import_source
from storage.models import Pair
from storage.vocabulary import label_names


def _expected(annotations_dir, name):
    """caption id -> (image file name, label set from instances) straight from the JSON."""
    captions = json.loads((annotations_dir / f"captions_{name}.json").read_text(encoding="utf-8"))
    instances = json.loads((annotations_dir / f"instances_{name}.json").read_text(encoding="utf-8"))
    cats = {c["id"]: c["name"] for c in instances["categories"]}
    per_image = {im["id"]: set() for im in instances["images"]}
    for ann in instances["annotations"]:
        per_image[ann["image_id"]].add(cats[ann["category_id"]])
    files = {im["id"]: im["file_name"] for im in captions["images"]}
    out = {f"coco:{a['id']}": (files[a["image_id"]], per_image[a["image_id"]]) for a in captions["annotations"]}
    return out, [c["name"] for c in instances["categories"]]


def _pairs(store):
    with store.db.read() as s:
        labels = {c.pair_id: c.labels for c in current_labels(s)}
        return {ext: (path, split, labels.get(pid)) for pid, ext, path, split in
                s.execute(select(Pair.id, Pair.external_id, Pair.image_path, Pair.split))}


def test_both_coco_splits_import_with_instance_labels_and_an_inferred_vocabulary(coco_mini_dir, make_workspace):
    store = make_workspace()
    annotations = coco_mini_dir / "annotations"
    expected_train, categories = _expected(annotations, "train2017")
    expected_val, _ = _expected(annotations, "val2017")
    seen = []

    train = import_source(store, annotations / "captions_train2017.json", "coco", split="train",
                          progress=lambda done, total: seen.append((done, total)))
    val = import_source(store, annotations / "captions_val2017.json", "coco")

    assert (train.added, train.skipped, train.labelled) == (len(expected_train), 0, len(expected_train))
    assert (val.added, val.skipped, val.labelled) == (len(expected_val), 0, len(expected_val))
    assert train.labels_added == categories and len(categories) == 80
    assert val.labels_added == []
    assert seen[-1] == (len(expected_train), len(expected_train))
    with store.db.read() as s:
        assert label_names(s) == categories
    pairs = _pairs(store)
    assert len(pairs) == len(expected_train) + len(expected_val)
    for expected, folder, split in ((expected_train, "train2017", "train"), (expected_val, "val2017", "pool")):
        for ext, (file_name, labels) in expected.items():
            path, got_split, got_labels = pairs[ext]
            assert path == str((coco_mini_dir / folder / file_name).resolve())
            assert got_split == split
            assert set(got_labels) == labels


def test_coco_reimport_is_idempotent(coco_mini_dir, make_workspace, workspace_state):
    store = make_workspace()
    first = import_source(store, coco_mini_dir, "coco")  # the folder: every annotations/captions_*.json
    before = workspace_state(store)

    again = import_source(store, coco_mini_dir / "annotations" / "captions_val2017.json", "coco")

    n_val = len(_expected(coco_mini_dir / "annotations", "val2017")[0])
    n_all = n_val + len(_expected(coco_mini_dir / "annotations", "train2017")[0])
    assert first.added == before["pairs"] == n_all
    assert (again.added, again.skipped, again.labels_added, again.labelled) == (0, n_val, [], 0)
    assert workspace_state(store) == before
    with store.db.read() as s:
        images = {p.name for p in coco_mini_dir.glob("*2017/*.jpg")}
        assert s.scalar(select(func.count(func.distinct(Pair.image_sha256)))) == len(images)
