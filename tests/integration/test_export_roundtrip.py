"""Exports (DESIGN §7 Export): manifest round trips, formula neutralisation, COCO and Label Studio shapes,
atomic output."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sqlalchemy import event, select

from storage.annotations import current_labels, record_event
from storage.audit import AuditedPair, record_audit
from storage.errors import NotFoundError
from storage.exporters import export_workspace, neutralise
from storage.importers import import_source
from storage.importers.manifest import unneutralise
from storage.models import Pair, User
from tests.support.workspace import feature_files

TEXTS = ["=HYPERLINK(\"http://evil\")", "-2+3 is a sum", "@SUM(A1:A2)", "'=already quoted", "a plain caption",
         "+ a plus", "\ttabbed start"]


@pytest.fixture()
def labelled(tmp_path, make_workspace, make_image):
    """A workspace with imported labels (some ``[]``, some absent) and submits by two annotators."""
    data = tmp_path / "data"
    rows = []
    for i, text in enumerate(TEXTS):
        image = make_image(data / "images" / f"{i % 4}.png", color=(60 * (i % 4), 100, 150))
        row = {"id": f"item{i}", "image": str(image.relative_to(data)), "text": text,
               "split": ("pool", "train", "test")[i % 3]}
        if i % 3 == 0:
            row["labels"] = ["cat"] if i else []
        rows.append(row)
    rows.append({"image": "images/0.png", "text": "no id given", "labels": ["dog", "cat"]})
    manifest = data / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    store = make_workspace("source")
    report = import_source(store, manifest, "manifest")
    assert (report.added, report.labelled, report.labels_added) == (len(rows), 4, ["cat", "dog"])
    with store.db.write() as s:
        alice, bob = User(name="alice", role="annotator"), User(name="bob", role="annotator")
        s.add_all([alice, bob])
        s.flush()
        ids = dict(s.execute(select(Pair.external_id, Pair.id)).all())
        record_event(s, pair_id=ids["item1"], user_id=alice.id, kind="submit", labels=["dog"], verdict="match")
        record_event(s, pair_id=ids["item2"], user_id=alice.id, kind="submit", labels=["cat", "dog"])
        record_event(s, pair_id=ids["item2"], user_id=bob.id, kind="submit", labels=["dog"], verdict="mismatch")
        record_event(s, pair_id=ids["item3"], user_id=bob.id, kind="submit", labels=[])
    return store


def _snapshot(store) -> dict:
    """external id -> (text, image sha256, split, current labels)."""
    with store.db.read() as s:
        labels = {c.pair_id: c.labels for c in current_labels(s)}
        return {ext: (text, sha, split, None if labels.get(pid) is None else sorted(labels[pid]))
                for pid, ext, text, sha, split in
                s.execute(select(Pair.id, Pair.external_id, Pair.text, Pair.image_sha256, Pair.split))}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_manifest_export_round_trips_into_a_fresh_workspace(labelled, make_workspace, tmp_path, fmt):
    out = tmp_path / f"export.{fmt}"
    report = export_workspace(labelled, fmt, out)
    fresh = make_workspace(f"fresh-{fmt}")

    imported = import_source(fresh, out, "manifest", allow_absolute=True)

    source = _snapshot(labelled)
    assert report.rows == imported.added == len(source)
    assert _snapshot(fresh) == source
    assert source["item0"][3] == [] and source["item4"][3] is None  # "[]" and "absent" both survive
    assert source["item1"][3] == ["dog"] and source["item2"][3] == ["dog"]


def test_jsonl_export_carries_the_annotation_state(labelled, tmp_path):
    out = tmp_path / "export.jsonl"
    export_workspace(labelled, "jsonl", out)
    rows = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    item2 = rows["item2"]
    assert item2["annotators"] == ["alice", "bob"] and item2["agreement"] == 0.75
    assert item2["status"] == "conflict" and item2["timestamp"].endswith("+00:00")
    assert rows["item1"]["verdict"] == "match" and rows["item1"]["annotators"] == ["alice"]
    assert "labels" not in rows["item4"] and rows["item4"]["status"] == "unlabelled"
    assert rows["item6"]["image"].startswith("/")


def test_csv_export_neutralises_formulas(labelled, tmp_path):
    out = tmp_path / "export.csv"
    export_workspace(labelled, "csv", out)
    with out.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        assert all(not cell or cell[0] not in "=+-@\t\r" for cell in row.values()), row
    texts = {row["id"]: row["text"] for row in rows}
    assert texts["item0"] == "'" + TEXTS[0] and texts["item3"] == "''=already quoted"
    assert {row["id"]: row["labelled"] for row in rows}["item4"] == "0"


@pytest.mark.parametrize("cell", ["", "'", "'a", "''", "'''=x", "=1", "-", "plain", "@x", "\rcr", "'\t"])
def test_neutralise_is_undone_by_the_importer(cell):
    assert unneutralise(neutralise(cell)) == cell


def test_coco_export_shape(labelled, tmp_path):
    out = tmp_path / "export.json"
    report = export_workspace(labelled, "coco", out)
    doc = json.loads(out.read_text(encoding="utf-8"))
    snapshot = _snapshot(labelled)
    assert report.rows == len(doc["annotations"]) == len(snapshot)
    assert len(doc["images"]) == len({sha for _, sha, _, _ in snapshot.values()})
    assert [c["name"] for c in doc["categories"]] == ["cat", "dog"]
    per_image: dict[str, set] = {}
    for _, sha, _, labels in snapshot.values():
        per_image.setdefault(sha, set()).update(labels or ())
    assert len(doc["tags"]) == sum(len(v) for v in per_image.values())
    image_ids = {im["id"] for im in doc["images"]}
    assert all(a["image_id"] in image_ids for a in doc["annotations"] + doc["tags"])
    assert {a["pairlab_id"] for a in doc["annotations"]} == set(snapshot)


def test_label_studio_export_has_one_annotation_per_annotator(labelled, tmp_path):
    out = tmp_path / "tasks.json"
    report = export_workspace(labelled, "label-studio", out)
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert len(tasks) == report.rows == len(_snapshot(labelled))
    by_id = {t["data"]["pairlab"]["id"]: t for t in tasks}
    item2 = by_id["item2"]["annotations"]
    assert sorted(a["created_username"] for a in item2) == ["alice", "bob"]
    bob = next(a for a in item2 if a["created_username"] == "bob")
    assert bob["result"][0]["value"]["choices"] == ["dog"] and bob["result"][1]["value"]["choices"] == ["mismatch"]
    assert by_id["item4"]["annotations"] == [] and by_id["item0"]["annotations"][0]["created_username"] == "system"


def test_failing_export_leaves_no_partial_file(labelled, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()

    def fail_after_two(done, total):
        if done > 2:
            raise RuntimeError("disk full")

    for fmt in ("jsonl", "csv", "coco", "label-studio"):
        with pytest.raises(RuntimeError):
            export_workspace(labelled, fmt, folder / f"out.{fmt}", progress=fail_after_two)
    with pytest.raises(NotFoundError, match="no image features"):
        export_workspace(labelled, "npz", folder / "out.npz")
    assert list(folder.iterdir()) == []


def test_npz_export_round_trips_through_the_features_importer(wiki_dir, make_workspace, tmp_path):
    store = make_workspace("wiki")
    report = import_source(store, wiki_dir, "wiki")
    assert [(f.modality, f.rows) for f in report.features] == [("image", 2866), ("text", 2866)]
    out = tmp_path / "wiki.npz"
    assert export_workspace(store, "npz", out).rows == 2866

    fresh = make_workspace("fresh")
    again = import_source(fresh, out, "features")

    assert (again.added, again.labelled) == (2866, 2866)
    assert again.labels_added == (wiki_dir / "categories.list").read_text().split()
    split_and_labels = {k: (split, labels) for k, (_, _, split, labels) in _snapshot(store).items()}
    assert {k: (split, labels) for k, (_, _, split, labels) in _snapshot(fresh).items()} == split_and_labels
    with np.load(out) as npz, store.db.read() as s:
        assert npz["image"].shape == (2866, 128) and npz["labels"].sum(axis=1).tolist() == [1.0] * 2866
        splits = dict(s.execute(select(Pair.external_id, Pair.split)).all())
        assert [splits[i] for i in npz["ids"]] == npz["split"].tolist()
    original = np.load(feature_files(store)["text"][0])
    copied = np.load(feature_files(fresh)["text"][0])
    assert np.array_equal(original, copied)


@pytest.fixture()
def audited_export(labelled):
    """``labelled`` with a mismatch verdict on item5, an older audit of every pair and a latest audit that
    scored all but item4 and the pair without an id: the exports must carry the latest run's figures."""
    with labelled.db.write() as s:
        ids = dict(s.execute(select(Pair.external_id, Pair.id)).all())
        alice = s.scalar(select(User.id).where(User.name == "alice"))
        record_event(s, pair_id=ids["item5"], user_id=alice, kind="submit", labels=["cat"], verdict="mismatch")
        order = sorted(ids, key=ids.__getitem__)
        record_audit(s, model_version_id=None, params={}, created_by=None,
                     scored=[AuditedPair(ids[e], r + 1, 0.5, {}) for r, e in enumerate(order)])
        scored = [e for e in order if e.startswith("item") and e != "item4"]
        run = record_audit(s, model_version_id=None, params={}, created_by=None,
                           scored=[AuditedPair(ids[e], r + 1, 1.0 - r / 10, {}) for r, e in enumerate(reversed(scored))])
    expected = {e: (1.0 - r / 10, r + 1) for r, e in enumerate(reversed(scored))}
    return labelled, run, expected, set(ids) - set(scored)


def test_every_manifest_and_label_studio_export_carries_the_verdict_and_the_latest_audit(audited_export, tmp_path):
    store, _, expected, unscored = audited_export
    statements = []
    engine = store.db.engine
    listen = lambda conn, cursor, statement, *rest: statements.append(statement)   # noqa: E731
    event.listen(engine, "before_cursor_execute", listen)
    try:
        for fmt in ("jsonl", "csv", "label-studio"):
            export_workspace(store, fmt, tmp_path / f"audit.{fmt}")
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    # one streamed query per export reads the audit, whatever the number of pairs
    assert sum("audit_scores" in sql for sql in statements) == 3
    jsonl = {r["id"]: r for r in map(json.loads, (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines())}
    with (tmp_path / "audit.csv").open(encoding="utf-8", newline="") as fh:
        csv_rows = {r["id"]: r for r in csv.DictReader(fh)}
    tasks = {t["data"]["pairlab"]["id"]: t["data"]["pairlab"]
             for t in json.loads((tmp_path / "audit.label-studio").read_text(encoding="utf-8"))}
    assert set(jsonl) == set(csv_rows) == set(tasks) == set(expected) | unscored
    for ext, (score, rank) in expected.items():
        assert (jsonl[ext]["audit_score"], jsonl[ext]["audit_rank"]) == (pytest.approx(score), rank)
        assert (float(csv_rows[ext]["audit_score"]), int(csv_rows[ext]["audit_rank"])) == (pytest.approx(score), rank)
        assert (tasks[ext]["audit_score"], tasks[ext]["audit_rank"]) == (pytest.approx(score), rank)
    for ext in unscored:
        assert jsonl[ext]["audit_score"] is None and jsonl[ext]["audit_rank"] is None
        assert csv_rows[ext]["audit_score"] == csv_rows[ext]["audit_rank"] == ""
        assert tasks[ext]["audit_score"] is None and tasks[ext]["audit_rank"] is None
    assert jsonl["item5"]["verdict"] == csv_rows["item5"]["verdict"] == tasks["item5"]["verdict"] == "mismatch"
    assert jsonl["item1"]["verdict"] == csv_rows["item1"]["verdict"] == tasks["item1"]["verdict"] == "match"
    assert jsonl["item4"]["verdict"] is None and csv_rows["item4"]["verdict"] == ""


def test_exports_before_any_audit_have_null_audit_fields(labelled, tmp_path):
    export_workspace(labelled, "jsonl", tmp_path / "plain.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and all(r["audit_score"] is None and r["audit_rank"] is None for r in rows)
