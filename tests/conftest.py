"""Shared test helpers: real SQLite workspaces in ``tmp_path``, tiny real images, the shared datasets."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select

from storage.models import Base, Pair
from storage.store import Store, init_workspace
from tests.support.workspace import workspace_files

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def _dataset(name: str) -> Path:
    """A folder of ``../shared/datasets``; skipped when absent, except under ``CI=true`` where it must exist."""
    folder = DATASETS / name
    if not folder.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{folder} is missing; CI must provide ../shared/datasets/{name}")
        pytest.skip(f"{folder} is absent (real-data test; present in CI)")
    return folder


@pytest.fixture()
def coco_mini_dir() -> Path:
    return _dataset("coco-mini")


@pytest.fixture()
def wiki_dir() -> Path:
    return _dataset("wiki-features")


@pytest.fixture()
def fashion_dir() -> Path:
    return _dataset("fashion")


@pytest.fixture()
def make_workspace(tmp_path) -> Callable[..., Store]:
    """``make_workspace(name="ws", labels=None)`` -> an initialised store, closed after the test."""
    stores: list[Store] = []

    def make(name: str = "ws", labels: list[str] | None = None) -> Store:
        store = init_workspace(tmp_path / name, labels=labels)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture()
def make_image() -> Callable[..., Path]:
    """``make_image(path, size=(16, 12), color=(200, 30, 30))`` writes a real image (format from the suffix)."""

    def make(path: Path, size: tuple[int, int] = (16, 12), color: tuple[int, int, int] = (200, 30, 30)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).save(path)
        return path

    return make


@pytest.fixture()
def workspace_state() -> Callable[[Store], dict]:
    """``workspace_state(store)``: what a failed operation must leave unchanged - the row count of every
    table in ``storage.models`` (keyed by table name), every column of every pair (``pairs_dump``), and
    ``files``: the workspace's files with their sizes and hashes (``workspace_files``)."""

    def state(store: Store) -> dict:
        with store.db.read() as s:
            counts = {table.name: s.scalar(select(func.count()).select_from(table))
                      for table in Base.metadata.sorted_tables}
            counts["pairs_dump"] = [tuple(row) for row in s.execute(select(Pair.__table__).order_by(Pair.id))]
        counts["files"] = workspace_files(store.root)
        return counts

    return state
