"""What a crash leaves in a workspace is removed when a worker starts, and nothing else is."""
from __future__ import annotations

import logging
import os
import time

import pytest

from app.jobs.litter import MIN_AGE_SECONDS
from app.jobs.worker import run_worker
from storage.model_versions import add_model_version

OLD = time.time() - MIN_AGE_SECONDS - 60  # unchanged for longer than a running verb ever pauses


def make(path, *, mtime: float | None = None, folder: bool = False):
    if folder:
        path.mkdir(parents=True)
        (path / "part.npy").write_bytes(b"x")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    if mtime is not None:
        for item in (path, *path.rglob("*")):
            os.utime(item, (mtime, mtime), follow_symlinks=False)
    return path


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_orphan_checkpoints_are_removed_and_recorded_ones_kept(make_workspace, caplog):
    store = make_workspace()
    models = store.root / "models"
    recorded = make(models / "model-20240101T000000-0123abcd.pt", mtime=OLD)
    orphan = make(models / "model-20240102T000000-deadbeef.pt", mtime=OLD)  # killed before its row committed
    make(models / "model-20240103T000000-feedf00d.pt")  # no row yet: maybe a `pairlab train` about to commit
    make(models / "notes.txt", mtime=OLD)
    with store.db.write() as s:  # the row names the file by its absolute path in a workspace since moved
        add_model_version(s, path=f"/elsewhere/ws/models/{recorded.name}", parent_version=None, labelled_count=2,
                          metrics={}, config={})
    with caplog.at_level(logging.INFO, logger="app.jobs.litter"):
        run_worker(store.root, once=True)
    assert names(models) == ["model-20240101T000000-0123abcd.pt", "model-20240103T000000-feedf00d.pt", "notes.txt"]
    assert f"removed {orphan} (a checkpoint without a model version)" in caplog.messages


def test_unfinished_exports_are_removed_and_finished_ones_kept(make_workspace, caplog):
    store = make_workspace()
    exports = store.root / "exports"
    make(exports / ".partial-x1y2z3", folder=True)  # an export job's staging folder: only workers make them
    make(exports / ".pairlab.jsonl.0a1b2c3d.tmp", mtime=OLD)
    make(exports / ".npz-parts-abc123", folder=True, mtime=OLD)
    make(exports / ".pairlab.csv.1a2b3c4d.tmp")  # just written: maybe a running `pairlab export`
    make(exports / ".npz-parts-live99", folder=True)
    for kept in ("pairlab.jsonl", ".hidden-notes", "x.tmp"):
        make(exports / kept, mtime=OLD)
    with caplog.at_level(logging.INFO, logger="app.jobs.litter"):
        run_worker(store.root, once=True)
    assert names(exports) == [".hidden-notes", ".npz-parts-live99", ".pairlab.csv.1a2b3c4d.tmp", "pairlab.jsonl",
                              "x.tmp"]
    removed = sorted(m for m in caplog.messages if m.startswith("removed "))
    assert removed == [f"removed {exports / '.npz-parts-abc123'} (an unfinished npz export's parts)",
                       f"removed {exports / '.pairlab.jsonl.0a1b2c3d.tmp'} (an unfinished export file)",
                       f"removed {exports / '.partial-x1y2z3'} (an export job's staging folder)"]


@pytest.mark.parametrize("linked", ["entry", "folder"])
def test_nothing_outside_the_workspace_is_removed(make_workspace, tmp_path, linked):
    """Links are never followed: not a litter-named link, not one inside a litter folder, not a linked exports/."""
    store = make_workspace()
    outside = tmp_path / "outside"
    precious = make(outside / ".partial-mine" / "data.bin", mtime=OLD)
    beside = make(outside / ".report.jsonl.0a1b2c3d.tmp", mtime=OLD)  # `pairlab export --out outside/...`
    exports = store.root / "exports"
    if linked == "folder":
        os.symlink(outside, exports)
    else:
        exports.mkdir()
        os.symlink(outside / ".partial-mine", exports / ".partial-link")
        staging = make(exports / ".partial-real", folder=True)
        os.symlink(precious, staging / "link-to-outside")
    run_worker(store.root, once=True)
    assert precious.read_bytes() == b"x" and beside.exists()
    assert names(outside) == [".partial-mine", ".report.jsonl.0a1b2c3d.tmp"]
    if linked == "entry":
        assert names(exports) == [".partial-link"]


def test_feature_files_no_feature_set_names_are_removed_and_registered_ones_kept(make_workspace, caplog):
    from storage.features import register_features

    store = make_workspace()
    features = store.root / "features"
    registered = make(features / "precomputed-image-0123abcd.npy", mtime=OLD)
    make(features / "precomputed-image-0123abcd.ids.npy", mtime=OLD)
    orphans = [make(features / "precomputed-image-deadbeef.npy", mtime=OLD),  # an import killed before its commit
               make(features / "precomputed-image-deadbeef.ids.npy", mtime=OLD),
               make(features / "tfidf-text-feedf00d.npy", mtime=OLD),  # replaced, then killed before the delete
               make(features / ".precomputed-text-1234abcd.npy.0a1b2c3d.tmp", mtime=OLD)]  # killed mid-write
    make(features / "efficientnet-lite0-image-00aa11bb.npy")  # just written: maybe an encode about to register it
    make(features / "precomputed-text.npy", mtime=OLD)  # the fixed name older workspaces use
    with store.db.write() as s:
        register_features(s, "image", "precomputed", registered, 4, 2)
    with caplog.at_level(logging.INFO, logger="app.jobs.litter"):
        run_worker(store.root, once=True)
    assert names(features) == ["efficientnet-lite0-image-00aa11bb.npy", "precomputed-image-0123abcd.ids.npy",
                               "precomputed-image-0123abcd.npy", "precomputed-text.npy"]
    assert f"removed {orphans[0]} (a feature file no feature set names)" in caplog.messages
    assert f"removed {orphans[3]} (an unfinished feature file)" in caplog.messages
