"""The export-target validator: where an export may be written, checked before anything is opened.

``check_export_target(store, out)`` returns the resolved file to write (symlinks followed), or raises
``InputError(out, None, "out", why)`` for:

- a path the path validator refuses (``importers.fields.check_path``: NUL, control characters, too
  long), or whose hidden temporary name (``features.temporary_name``) would be too long;
- an existing folder, or an existing thing that is not a regular file (a FIFO, a device);
- a parent folder that does not exist;
- the workspace's own files: anything inside the workspace folder other than under ``exports/``
  (``pairlab.toml``, ``pairlab.db`` and its ``-wal``/``-shm``/``-journal``, ``features/``, ``models/``,
  ``cache/``, the root's own files), and, wherever they live, the SQLite database files, the config,
  registered feature files and model checkpoints, also when ``out`` is a symlink or a hard link to one.
"""
from __future__ import annotations

import os
from pathlib import Path

from storage.errors import InputError
from storage.features import list_features, temporary_name
from storage.importers.fields import MAX_NAME_BYTES, MAX_PATH_BYTES, check_path
from storage.model_versions import checkpoint_paths
from storage.store import Store

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def own_files(store: Store) -> dict[Path, str]:
    """The files the workspace owns wherever they are (resolved path -> what it is)."""
    own = {store.workspace.config_path.resolve(): "configuration"}
    database = store.db.engine.url.database if store.db.is_sqlite else None
    if database and database != ":memory:":
        db_file = Path(database).resolve()
        own[db_file] = "database"
        own.update({db_file.with_name(db_file.name + side): "database" for side in SQLITE_SIDE_FILES})
    with store.db.read() as session:
        for info in list_features(session):
            own.update({Path(info.path).resolve(): "feature file", Path(info.ids_path).resolve(): "feature file"})
        own.update({Path(p).resolve(): "model checkpoint" for p in checkpoint_paths(session)})
    return own


def _refuse(out: str, message: str) -> InputError:
    return InputError(out, None, "out", message)


def check_export_target(store: Store, out: str | Path) -> Path:
    """The resolved file an export may replace; see the module docstring for what is refused."""
    raw = str(out)
    try:
        target = Path(check_path(raw, raw, None, "out")).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise _refuse(raw, f"cannot resolve: {exc}") from None
    if len(os.fsencode(target)) > MAX_PATH_BYTES:
        raise _refuse(raw, f"resolves to a path longer than {MAX_PATH_BYTES} bytes")
    if len(os.fsencode(temporary_name(target).name)) > MAX_NAME_BYTES:
        longest = MAX_NAME_BYTES - (len(temporary_name(Path("x")).name) - 1)
        raise _refuse(raw, f"file name too long: at most {longest} bytes (the temporary file adds a few)")
    own = own_files(store)
    if target in own:
        raise _refuse(raw, f"is the workspace's {own[target]} {target}; an export never overwrites it")
    root = store.root.resolve()
    exports = (root / "exports").resolve()
    if target == root or (target.is_relative_to(root) and not target.is_relative_to(exports)):
        raise _refuse(raw, f"inside the workspace {root}; exports go under {exports}, or outside the workspace")
    if any(target.is_relative_to(path) for path in own):
        raise _refuse(raw, "is inside a folder the workspace owns")
    if target.is_dir():
        raise _refuse(raw, "is an existing folder; give a file name")
    if target.exists():
        if not target.is_file():
            raise _refuse(raw, "exists and is not a regular file")
        same = _same_file(target, own)
        if same is not None:
            raise _refuse(raw, f"is a hard link to the workspace's {own[same]} {same}")
    if not target.parent.is_dir():
        raise _refuse(raw, f"folder {target.parent} does not exist")
    return target


def _same_file(target: Path, own: dict[Path, str]) -> Path | None:
    stat = target.stat()
    for path in own:
        try:
            other = path.stat()
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (stat.st_dev, stat.st_ino):
            return path
    return None
