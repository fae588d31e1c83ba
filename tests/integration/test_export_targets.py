"""Export targets (issue 14): an export never overwrites the workspace's own files nor a folder.

Each refused target is one ``InputError`` (field ``out``) that names it, the workspace is unchanged
(every table, the pairs, every file, and, in process, the bytes of the SQLite files), and no temporary
file is left behind. Two kinds go through the ``pairlab export`` CLI (exit code 2, one line, no traceback).
Every kind runs on a SQLite file and on a throw-away PostgreSQL server (``any_store``), except those whose
target is SQLite's database files (``store``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine

from storage.errors import InputError, one_line
from storage.exporters import export_workspace
from storage.features import list_features
from storage.importers import import_source
from storage.model_versions import add_model_version
from storage.models import Base
from storage.store import init_workspace
from tests.support.cli import assert_user_error, pairlab
from tests.support.postgres import database_url
from tests.support.workspace import DATABASE_FILES


@pytest.fixture(scope="module")
def postgres():
    """The URL of one throw-away PostgreSQL server's database for the whole module (``any_store`` empties it)."""
    with database_url("postgresql") as url:
        yield url


def _filled(store):
    """``store`` with pairs, precomputed features, a model checkpoint, a cache file and an export."""
    data = store.root.parent / "data"
    (data / "images").mkdir(parents=True)
    Image.new("RGB", (16, 12), (200, 30, 30)).save(data / "images" / "a.jpg")
    (data / "m.jsonl").write_text(json.dumps({"id": "p1", "image": "images/a.jpg", "text": "a red square",
                                              "labels": ["cat"]}) + "\n", encoding="utf-8")
    import_source(store, data / "m.jsonl", "manifest")
    np.savez(data / "f.npz", image=np.ones((2, 4)), text=np.ones((2, 3)), ids=np.array(["f1", "f2"]))
    import_source(store, data / "f.npz", "features")
    checkpoint = store.workspace.subdir("models") / "v1.pt"
    checkpoint.write_bytes(b"weights")
    with store.db.write() as s:
        add_model_version(s, path=checkpoint, parent_version=None, labelled_count=1, metrics={}, config={})
    (store.workspace.subdir("cache") / "image-abc.npy").write_bytes(b"cached")
    export_workspace(store, "jsonl", store.workspace.subdir("exports") / "earlier.jsonl")
    return store


@pytest.fixture()
def store(tmp_path):
    """A filled workspace on its own SQLite file (for the targets that are SQLite's database files)."""
    store = _filled(init_workspace(tmp_path / "ws", labels=["cat", "dog"]))
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    """A filled workspace on a SQLite file, or on the module's PostgreSQL database emptied first."""
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres")
        engine = create_engine(url)
        Base.metadata.drop_all(engine)
        engine.dispose()
    store = _filled(init_workspace(tmp_path / "ws", labels=["cat", "dog"], database_url=url))
    yield store
    store.close()


def _database_bytes(root: Path) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest()
            for name in DATABASE_FILES if (root / name).is_file()}


def _refused(store, workspace_state, out, fragment: str, fmt: str = "jsonl") -> InputError:
    before, database = workspace_state(store), _database_bytes(store.root)
    with pytest.raises(InputError) as caught:
        export_workspace(store, fmt, out)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(out), None, "out"), str(error)
    assert str(error).startswith(one_line(f"{out}: out: ")) and "\n" not in str(error)
    assert fragment in error.message, error.message
    assert workspace_state(store) == before
    assert _database_bytes(store.root) == database
    return error


# kind, target (from the workspace root), fragment of the message
WORKSPACE_TARGETS = [
    ("the-database", "pairlab.db", "the workspace's database"),
    ("the-database-wal", "pairlab.db-wal", "the workspace's database"),
    ("the-database-shm", "pairlab.db-shm", "the workspace's database"),
    ("the-database-journal", "pairlab.db-journal", "the workspace's database"),
    ("the-configuration", "pairlab.toml", "the workspace's configuration"),
    ("a-feature-file", "{image features}", "the workspace's feature file"),
    ("a-feature-ids-file", "{text feature ids}", "the workspace's feature file"),
    ("a-new-file-in-features", "features/new.npz", "inside the workspace"),
    ("the-features-folder", "features", "inside the workspace"),
    ("a-model-checkpoint", "models/v1.pt", "the workspace's model checkpoint"),
    ("a-new-file-in-models", "models/v2.pt", "inside the workspace"),
    ("a-cache-file", "cache/image-abc.npy", "inside the workspace"),
    ("a-new-file-at-the-root", "labelled.jsonl", "inside the workspace"),
    ("the-workspace-root", ".", "inside the workspace"),
    ("dotdot-back-into-the-workspace", "exports/../pairlab.toml", "the workspace's configuration"),
    ("the-exports-folder", "exports", "an existing folder"),
]


@pytest.mark.parametrize("kind, target, fragment", WORKSPACE_TARGETS, ids=[c[0] for c in WORKSPACE_TARGETS])
def test_workspace_files_are_refused(any_store, workspace_state, kind, target, fragment):
    """On PostgreSQL the ``pairlab.db*`` names are no database, but still inside the workspace."""
    store = any_store
    with store.db.read() as s:
        features = {f.modality: f for f in list_features(s)}
    named = {"{image features}": features["image"].path, "{text feature ids}": features["text"].ids_path}
    if not store.db.is_sqlite and fragment == "the workspace's database":
        fragment = "inside the workspace"
    _refused(store, workspace_state, store.root / named.get(target, target), fragment)


def test_relative_target_from_inside_the_workspace(any_store, workspace_state, monkeypatch):
    monkeypatch.chdir(any_store.root)
    _refused(any_store, workspace_state, Path("pairlab.toml"), "the workspace's configuration")


def test_symlink_to_the_database(store, workspace_state, tmp_path):
    link = tmp_path / "innocent.jsonl"
    link.symlink_to(store.root / "pairlab.db")
    _refused(store, workspace_state, link, "the workspace's database")


def test_hard_link_to_a_checkpoint(any_store, workspace_state, tmp_path):
    store = any_store
    link = tmp_path / "copy.pt"
    os.link(store.root / "models" / "v1.pt", link)
    _refused(store, workspace_state, link, "hard link to the workspace's model checkpoint")


def test_checkpoint_registered_outside_the_workspace(any_store, workspace_state, tmp_path):
    store = any_store
    outside = tmp_path / "shared-models" / "v2.pt"
    outside.parent.mkdir()
    outside.write_bytes(b"weights")
    with store.db.write() as s:
        add_model_version(s, path=outside, parent_version=1, labelled_count=1, metrics={}, config={})
    _refused(store, workspace_state, outside, "the workspace's model checkpoint")


def test_database_outside_the_workspace(tmp_path, workspace_state):
    database = tmp_path / "elsewhere" / "team.db"
    database.parent.mkdir()
    store = init_workspace(tmp_path / "ws", labels=["cat"], database_url=f"sqlite:///{database}")
    try:
        for target in (database, Path(f"{database}-wal")):
            _refused(store, workspace_state, target, "the workspace's database")
    finally:
        store.close()


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _loop(path: Path) -> Path:
    path.symlink_to(path.with_name("loop-b"))
    path.with_name("loop-b").symlink_to(path)
    return path


# kind, target (from the test's tmp_path, made by the function), fragment
OUTSIDE_TARGETS = [
    ("an-existing-folder", lambda t: t, "an existing folder"),
    ("a-nul-byte", lambda t: t / "out\x00.jsonl", "U+0000"),
    ("a-newline", lambda t: t / "out\n.jsonl", "newline"),
    ("a-name-over-255-bytes", lambda t: t / ("o" * 256), "256 bytes"),
    ("a-name-too-long-for-the-temporary-file", lambda t: t / ("o" * 250), "at most 241 bytes"),
    ("a-path-over-4096-bytes", lambda t: Path("/".join(["d" * 200] * 25)), "at most 4096"),
    ("a-missing-folder", lambda t: t / "missing" / "out.jsonl", "does not exist"),
    ("a-file-as-the-folder", lambda t: (t / "file").write_text("x") and t / "file" / "out.jsonl", "does not exist"),
    ("a-fifo", lambda t: _fifo(t / "pipe"), "not a regular file"),
    ("a-device", lambda t: Path("/dev/null"), "not a regular file"),
    ("a-symlink-loop", lambda t: _loop(t / "loop-a"), "cannot resolve"),
    ("an-empty-path", lambda t: "", "non-empty path"),
]


@pytest.mark.parametrize("kind, make, fragment", OUTSIDE_TARGETS, ids=[c[0] for c in OUTSIDE_TARGETS])
def test_bad_targets_are_refused(any_store, workspace_state, tmp_path, kind, make, fragment):
    store = any_store
    target = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    _refused(store, workspace_state, target, fragment)
    assert sorted(tmp_path.iterdir()) == before  # no temporary file left beside the target


def test_npz_to_the_database_is_refused(store, workspace_state):
    _refused(store, workspace_state, store.root / "pairlab.db", "the workspace's database", fmt="npz")


def test_accepted_targets(any_store, tmp_path):
    """Under WS/exports (a new file, an earlier export, the workbench job's hidden staging folder) and
    outside the workspace (a new file, an existing file) an export is written."""
    store = any_store
    staging = store.root / "exports" / ".partial-x"
    staging.mkdir()
    existing = tmp_path / "existing.jsonl"
    existing.write_text("old\n", encoding="utf-8")
    for out in (store.root / "exports" / "new.jsonl", store.root / "exports" / "earlier.jsonl",
                staging / "job.jsonl", tmp_path / "new.jsonl", existing):
        assert export_workspace(store, "jsonl", out).rows == 3
        assert len(out.read_text(encoding="utf-8").splitlines()) == 3


def _cli_refused(store, workspace_state, out: Path) -> str:
    """The CLI's process may checkpoint the SQLite WAL when it closes, which rewrites the database file
    without changing its content, so here the database is compared through its tables only."""
    before = workspace_state(store)
    line = assert_user_error(pairlab("export", store.root, "--out", out), f"{out}: out: ")
    assert workspace_state(store) == before
    return line


def test_cli_export_onto_the_database(store, workspace_state):
    assert "the workspace's database" in _cli_refused(store, workspace_state, store.root / "pairlab.db")


def test_cli_export_onto_a_folder(any_store, workspace_state, tmp_path):
    assert "an existing folder" in _cli_refused(any_store, workspace_state, tmp_path)
