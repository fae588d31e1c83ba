"""The ``pairlab`` CLI end to end, as a user runs it: real processes, a real SQLite file, real images."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.support.cli import REPO, pairlab

COCO = REPO.parent / "shared" / "datasets" / "coco-mini"


def ok(*args, **kw) -> subprocess.CompletedProcess:
    result = pairlab(*args, **kw)
    assert result.returncode == 0, result.stderr
    return result


def write_manifest(folder: Path, n: int = 6) -> Path:
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (32, 24), (40 * i % 255, 90, 200)).save(folder / "images" / f"{i}.jpg")
        rows.append({"id": f"item{i}", "image": f"images/{i}.jpg", "text": f"a photo number {i}",
                     **({"labels": ["cat"] if i % 2 else ["dog"]} if i < 2 else {})})
    manifest = folder / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def test_init_import_select_export_round_trip(tmp_path):
    ws = tmp_path / "ws"
    ok("init", ws, "--labels", "cat,dog")
    assert (ws / "pairlab.toml").is_file() and (ws / "pairlab.db").is_file()
    manifest = write_manifest(tmp_path / "data")
    ok("import", ws, manifest)
    result = ok("select", ws, "--strategy", "random", "--budget", "3")
    assert "round 1" in result.stderr and "3 pairs" in result.stderr
    out = tmp_path / "out.jsonl"
    ok("export", ws, "--format", "jsonl", "--out", out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6
    assert {r["id"]: r.get("labels") for r in rows if "labels" in r} == {"item0": ["dog"], "item1": ["cat"]}


def test_select_never_repeats_a_pair_and_refuses_an_oversized_budget(tmp_path):
    ws = tmp_path / "ws"
    ok("init", ws, "--labels", "cat,dog")
    ok("import", ws, write_manifest(tmp_path / "data"))
    result = pairlab("select", ws, "--strategy", "random", "--budget", "5")
    assert result.returncode == 2  # two of the six pairs were labelled at import
    assert result.stderr.strip() == "pairlab: error: --budget: 5 exceeds the 4 selectable pairs"
    ok("select", ws, "--strategy", "random", "--budget", "3")
    ok("select", ws, "--strategy", "random", "--budget", "1")
    result = pairlab("select", ws, "--strategy", "random", "--budget", "1")
    assert "no unlabelled pairs left in the pool that no round selected" in result.stderr


def test_user_errors_are_one_line_without_traceback_and_debug_shows_it(tmp_path):
    ws = tmp_path / "ws"
    ok("init", ws)
    again = pairlab("init", ws)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "already a pairlab workspace" in again.stderr
    assert "Traceback" not in again.stderr
    missing = pairlab("select", tmp_path / "nowhere", "--strategy", "random", "--budget", "1")
    assert missing.returncode == 2 and "not a pairlab workspace" in missing.stderr
    debug = pairlab("init", ws, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_users_are_added_with_hashed_passwords(tmp_path):
    ws = tmp_path / "ws"
    ok("init", ws)
    ok("user", "add", ws, "ann", "--role", "annotator", "--password-stdin", stdin="s3cret-password\n")
    short = pairlab("user", "add", ws, "bob", "--role", "annotator", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    raw = (ws / "pairlab.db").read_bytes()
    assert b"s3cret-password" not in raw
    from storage.store import open_store
    from storage.users import authenticate

    store = open_store(ws)
    with store.db.read() as s:
        assert authenticate(s, "ann", "s3cret-password").role == "annotator"
        assert authenticate(s, "ann", "wrong-password") is None


def test_select_is_refused_for_a_non_operator(tmp_path):
    ws = tmp_path / "ws"
    ok("init", ws, "--labels", "cat,dog")
    ok("import", ws, write_manifest(tmp_path / "data"))
    ok("user", "add", ws, "ann", "--role", "annotator", "--password-stdin", stdin="password123\n")
    result = pairlab("select", ws, "--strategy", "random", "--budget", "1", "--user", "ann")
    assert result.returncode == 2 and "may not operate" in result.stderr


@pytest.mark.skipif(not COCO.is_dir() and os.environ.get("CI") != "true",
                    reason="../shared/datasets/coco-mini is absent (it is present in CI)")
def test_coco_sample_both_splits_import_select_and_export_one_row_per_caption(tmp_path):
    ws = tmp_path / "ws"
    ok("init", ws)
    ok("import", ws, COCO / "annotations" / "captions_train2017.json", "--format", "coco", "--split", "train")
    ok("import", ws, COCO / "annotations" / "captions_val2017.json", "--format", "coco", "--split", "pool")
    captions = sum(len(json.loads((COCO / "annotations" / f"captions_{s}2017.json").read_text())["annotations"])
                   for s in ("train", "val"))
    no_budget = pairlab("select", ws, "--strategy", "random", "--budget", "10")
    assert no_budget.returncode == 2 and "no unlabelled pairs left" in no_budget.stderr  # COCO pairs carry labels
    out = tmp_path / "coco.jsonl"
    ok("export", ws, "--format", "jsonl", "--out", out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == captions
    assert len({r["id"] for r in rows}) == captions


def test_a_failed_init_leaves_nothing_behind(tmp_path):
    ws = tmp_path / "ws"
    result = pairlab("init", ws, "--labels", "cat,a|b")
    assert result.returncode == 2 and "--labels:2: label: label 'a|b' contains '|'" in result.stderr
    assert not ws.exists()
    bad_db = pairlab("init", ws, "--db", "sqlite:////nonexistent-dir/x/pairlab.db")
    assert bad_db.returncode == 2 and "cannot create the database" in bad_db.stderr
    assert not ws.exists()
    ok("init", ws, "--labels", "cat")  # nothing left over blocks a retry
