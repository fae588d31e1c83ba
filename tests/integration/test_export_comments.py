"""Exports carry comments in every format, Label Studio image references follow ``[export]``, and default file
names differ per format; on a real SQLite workspace with real image files."""
from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import select

from storage.annotations import record_event
from storage.errors import InputError
from storage.exporters import EXPORT_FORMATS, EXPORT_SUFFIX, export_workspace
from storage.features import register_features, write_feature_files
from storage.importers import import_source
from storage.models import Pair, User
from storage.store import open_store
from storage.workspace import ExportConfig, load_workspace, write_config

NOTE = 'a note with | a bar,\na line break and "quotes"'


@pytest.fixture()
def commented(tmp_path, make_workspace, make_image):
    """Three pairs with images under ``data/images``: p0 submitted with a comment and flagged with another,
    p1 submitted with a comment that was undone, p2 untouched; features for all three."""
    data = tmp_path / "data"
    rows = [{"id": f"p{i}", "image": str(make_image(data / "images" / "sub dir" / f"{i}.png",
                                                    color=(40 * i, 90, 140)).relative_to(data)),
             "text": f"caption {i}"} for i in range(3)]
    (data / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    store = make_workspace("ws", labels=["cat", "dog"])
    import_source(store, data / "pairs.jsonl", "manifest")
    with store.db.write() as s:
        ann = User(name="ann", role="annotator")
        s.add(ann)
        s.flush()
        ids = dict(s.execute(select(Pair.external_id, Pair.id)).all())
        record_event(s, pair_id=ids["p0"], user_id=ann.id, kind="submit", labels=["cat"], verdict="match",
                     comment=NOTE)
        record_event(s, pair_id=ids["p0"], user_id=ann.id, kind="flag", comment="blurry")
        gone = record_event(s, pair_id=ids["p1"], user_id=ann.id, kind="submit", labels=["dog"], comment="oops")
        record_event(s, pair_id=ids["p1"], user_id=ann.id, kind="undo", undoes_id=gone.id)
        pair_ids = np.array(sorted(ids.values()), dtype=np.int64)
    for modality in ("image", "text"):
        path, _ = write_feature_files(store.workspace.subdir("features"), modality, "precomputed",
                                      np.eye(3, 4, dtype=np.float32), pair_ids)
        with store.db.write() as s:
            register_features(s, modality, "precomputed", path, 4, 3)
    return store, data


def test_every_format_carries_the_comments(commented, tmp_path):
    store, _ = commented
    out = {fmt: tmp_path / f"out{EXPORT_SUFFIX[fmt]}" for fmt in EXPORT_FORMATS}
    for fmt, path in out.items():
        export_workspace(store, fmt, path)

    jsonl = {r["id"]: r for r in map(json.loads, out["jsonl"].read_text(encoding="utf-8").splitlines())}
    assert (jsonl["p0"]["comments"], jsonl["p1"]["comments"], jsonl["p2"]["comments"]) == ([NOTE, "blurry"], [], [])

    with out["csv"].open(encoding="utf-8", newline="") as fh:
        cells = {row["id"]: row["comments"] for row in csv.DictReader(fh)}
    assert json.loads(cells["p0"]) == [NOTE, "blurry"] and cells["p1"] == cells["p2"] == ""

    coco = json.loads(out["coco"].read_text(encoding="utf-8"))
    assert {a["pairlab_id"]: a["comments"] for a in coco["annotations"]} == {"p0": [NOTE, "blurry"], "p1": [],
                                                                             "p2": []}

    tasks = {t["data"]["pairlab"]["id"]: t for t in json.loads(out["label-studio"].read_text(encoding="utf-8"))}
    [submitted] = tasks["p0"]["annotations"]
    assert [r for r in submitted["result"] if r["type"] == "textarea"] == [
        {"from_name": "comment", "to_name": "text", "type": "textarea", "value": {"text": [NOTE]}}]
    assert tasks["p0"]["data"]["pairlab"]["comments"] == [NOTE, "blurry"]

    with np.load(out["npz"]) as npz:
        by_row = [(npz["ids"][r], c) for r, c in zip(npz["comment_rows"], npz["comments"])]
    assert by_row == [("p0", NOTE), ("p0", "blurry")]


def _with_export_config(store, **export):
    write_config(store.root, replace(load_workspace(store.root).config, export=ExportConfig(**export)))
    store.close()
    return open_store(store.root)


def test_label_studio_images_are_relative_to_the_configured_root_or_urls(commented, tmp_path):
    store, data = commented
    out = tmp_path / "tasks.json"
    export_workspace(store, "label-studio", out)
    absolute = {t["data"]["pairlab"]["id"]: t["data"]["image"] for t in json.loads(out.read_text(encoding="utf-8"))}
    assert absolute["p1"] == str(data / "images" / "sub dir" / "1.png")

    store = _with_export_config(store, image_root=str(data))
    try:
        export_workspace(store, "label-studio", out)
        relative = {t["data"]["pairlab"]["id"]: t["data"]["image"] for t in json.loads(out.read_text(encoding="utf-8"))}
        assert relative["p1"] == "images/sub dir/1.png"
    finally:
        store.close()

    store = _with_export_config(store, image_root=str(data), image_url="/data/local-files/?d=")
    try:
        export_workspace(store, "label-studio", out)
        urls = {t["data"]["pairlab"]["id"]: t["data"]["image"] for t in json.loads(out.read_text(encoding="utf-8"))}
        assert urls["p1"] == "/data/local-files/?d=images/sub%20dir/1.png"
    finally:
        store.close()

    store = _with_export_config(store, image_root=str(data / "images" / "elsewhere"))
    try:
        before = out.read_bytes()
        with pytest.raises(InputError, match=r"image: pair 'p0': not under \[export\] image_root .*elsewhere"):
            export_workspace(store, "label-studio", out)
        assert out.read_bytes() == before  # the earlier export is left as it was
    finally:
        store.close()


def test_export_config_is_validated(tmp_path, make_workspace):
    store = make_workspace("cfg")
    root = store.root
    store.close()
    (root / "pairlab.toml").write_text((root / "pairlab.toml").read_text() + '\n[export]\nimage_url = "http://x/"\n')
    with pytest.raises(InputError, match=r"\[export\]: image_url: needs image_root"):
        open_store(root)


def test_default_file_names_differ_per_format():
    assert len(set(EXPORT_SUFFIX.values())) == len(EXPORT_FORMATS)
