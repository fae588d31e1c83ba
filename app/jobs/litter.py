"""What a crash leaves in a workspace, and its removal when a worker starts (``run_worker``, under the
worker lock).

A process killed mid-write leaves, inside the workspace:

* ``models/model-*.pt`` without a ``model_versions`` row: killed between writing the checkpoint and
  committing its row (``app.services.train``);
* ``features/<encoder>-<modality>-<8 hex>.npy`` (and its ``.ids.npy``) that no feature set names: written
  by an import or encode killed before its commit, or replaced by one killed after it but before it
  deleted the old files (``storage.importers.commit``, ``app.services.encode``); and
  ``features/.NAME.<8 hex>.tmp``, a feature file killed while being written;
* ``exports/.partial-*/``: an export job's staging folder (``app.jobs.handlers``);
* ``exports/.NAME.<8 hex>.tmp`` and ``exports/.npz-parts-*/``: the temporary file and the npz parts
  folder an export writes beside its target (``storage.exporters``), from ``pairlab export`` into the
  workspace's ``exports/``.

Only workers make ``.partial-*`` folders and the worker lock admits one, so those are removed whatever
their age. Checkpoints, feature files and export temporaries can also belong to a ``pairlab train``,
``import``, ``encode`` or ``export`` running beside the worker right now, so they are removed only once nothing in them changed
for ``MIN_AGE_SECONDS``. Nothing outside the workspace is touched: symbolic links are never followed,
and a ``models`` or ``exports`` folder that resolves outside the workspace is left alone.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from app.jobs.handlers import STAGING_PREFIX
from app.services.train import CHECKPOINT_NAME
from storage.features import ids_path, list_features
from storage.model_versions import checkpoint_paths
from storage.store import Store

log = logging.getLogger(__name__)

MIN_AGE_SECONDS = 600.0  # longer than any pause between two writes of a running export or train verb


@dataclass(frozen=True)
class LitterKind:
    """Entries of ``folder`` whose name matches ``pattern``, unchanged for ``min_age`` seconds; with
    ``unless_recorded``, only those no model version or feature set names."""

    folder: str
    pattern: re.Pattern[str]
    min_age: float
    what: str
    unless_recorded: bool = False


KINDS = (
    LitterKind("exports", re.compile(re.escape(STAGING_PREFIX) + r".+"), 0.0, "an export job's staging folder"),
    LitterKind("exports", re.compile(r"\..+\.[0-9a-f]{8}\.tmp"), MIN_AGE_SECONDS, "an unfinished export file"),
    LitterKind("exports", re.compile(r"\.npz-parts-.+"), MIN_AGE_SECONDS, "an unfinished npz export's parts"),
    LitterKind("models", CHECKPOINT_NAME, MIN_AGE_SECONDS, "a checkpoint without a model version",
               unless_recorded=True),
    LitterKind("features", re.compile(r"[^.].*-(image|text)-[0-9a-f]{8}(\.ids)?\.npy"), MIN_AGE_SECONDS,
               "a feature file no feature set names", unless_recorded=True),
    LitterKind("features", re.compile(r"\..+\.[0-9a-f]{8}\.tmp"), MIN_AGE_SECONDS, "an unfinished feature file"),
)


def remove_litter(store: Store) -> list[Path]:
    """Remove the litter described above from ``store``'s workspace; return what was removed (each is logged)."""
    root = store.root.resolve()
    with store.db.read() as s:
        recorded = {Path(p).name for p in checkpoint_paths(s)}  # by name: the workspace may have moved
        recorded |= {Path(p).name for f in list_features(s) for p in (f.path, ids_path(f.path))}
    removed = []
    for kind in KINDS:
        for entry in _entries(root, kind.folder):
            if not kind.pattern.fullmatch(entry.name) or (kind.unless_recorded and entry.name in recorded):
                continue
            if time.time() - _last_change(entry) < kind.min_age:
                log.info("kept %s (%s, changed in the last %.0f s: maybe still being written)", entry, kind.what,
                         kind.min_age)
                continue
            try:
                if entry.is_dir():
                    shutil.rmtree(entry)  # never follows links inside
                else:
                    entry.unlink()
            except OSError as exc:
                log.warning("could not remove %s (%s): %s", entry, kind.what, exc)
                continue
            log.warning("removed %s (%s)", entry, kind.what)
            removed.append(entry)
    return removed


def _entries(root: Path, name: str) -> list[Path]:
    """The plain files and folders directly in ``root/name`` (no links), or none when that folder is a
    link, missing, or outside ``root``."""
    folder = root / name
    if folder.is_symlink() or not folder.is_dir() or folder.resolve().parent != root:
        return []
    return sorted(p for p in folder.iterdir() if not p.is_symlink())


def _last_change(entry: Path) -> float:
    """The newest modification time of ``entry`` and, for a folder, of anything in it (links not followed)."""
    newest = entry.lstat().st_mtime
    if entry.is_dir():
        for folder, dirs, files in os.walk(entry):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest
