"""What a workspace holds on disk, for tests that check a failed operation changed nothing."""
from __future__ import annotations

import hashlib
from pathlib import Path

DATABASE_FILES = ("pairlab.db", "pairlab.db-wal", "pairlab.db-shm", "pairlab.db-journal")


def workspace_files(root: Path) -> list[tuple[str, int, str]]:
    """Every file and folder under ``root`` as ``(relative path, size, sha256)`` (folders end in ``/``),
    leaving out the SQLite files, whose content ``workspace_state`` compares through the tables."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            out.append((rel + "/", 0, ""))
        elif rel not in DATABASE_FILES:
            data = path.read_bytes() if path.is_file() else b""
            out.append((rel, len(data), hashlib.sha256(data).hexdigest()))
    return out


def feature_files(store) -> dict[str, tuple[Path, Path]]:
    """Modality -> the ``.npy`` and ``.ids.npy`` of the workspace's precomputed feature set (unique names)."""
    from storage.features import PRECOMPUTED, list_features

    with store.db.read() as s:
        return {f.modality: (Path(f.path), Path(f.ids_path)) for f in list_features(s) if f.encoder == PRECOMPUTED}


def copy_workspace(template: Path, root: Path):
    """A copy of the workspace at ``template`` made at ``root`` whose feature sets and model versions point
    at the copy's files; returns it opened as ``pairlab`` opens it (settings validated)."""
    import shutil

    from sqlalchemy import select

    from app.services.settings import open_workspace
    from storage.models import FeatureSet, ModelVersion
    from storage.store import open_store

    shutil.copytree(template, root)
    store = open_store(root)
    with store.db.write() as s:
        for feature_set in s.scalars(select(FeatureSet)):
            feature_set.path = str(root / "features" / Path(feature_set.path).name)
        for version in s.scalars(select(ModelVersion)):
            version.path = str(root / "models" / Path(version.path).name)
    store.close()
    return open_workspace(root)
