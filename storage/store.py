"""Opening and creating workspaces: the configuration plus one database engine per process."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from storage.db import Database
from storage.errors import InputError, WorkspaceError
from storage.models import User
from storage.vocabulary import add_labels, clean_label
from storage.workspace import CONFIG_NAME, Workspace, WorkspaceConfig, load_workspace, write_config

SYSTEM_USER = "system"


@dataclass(frozen=True)
class Store:
    """A workspace and its database; create one per process with ``open_store``."""

    workspace: Workspace
    db: Database

    @property
    def root(self) -> Path:
        return self.workspace.root

    def system_user_id(self) -> int:
        with self.db.read() as s:
            return s.scalar(select(User.id).where(User.name == SYSTEM_USER))

    def close(self) -> None:
        self.db.dispose()


def open_store(root: str | Path) -> Store:
    """Open an existing workspace, upgrading an older schema; raise ``WorkspaceError`` if it is missing or of
    a newer schema."""
    workspace = load_workspace(root)
    db = Database(workspace.database_url)
    db.upgrade_schema()
    return Store(workspace, db)


def init_workspace(root: str | Path, *, labels: list[str] | None = None, database_url: str | None = None) -> Store:
    """Create ``root`` with ``pairlab.toml``, the schema, the system user and the label vocabulary.

    Refuses a directory that already holds a workspace. ``labels=None`` leaves the vocabulary to be
    inferred by the first import.
    """
    root = Path(root).resolve()
    if (root / CONFIG_NAME).exists():
        raise WorkspaceError(f"{root}: already a pairlab workspace")
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root}: exists and is not a directory")
    for i, name in enumerate(labels or (), start=1):
        try:
            clean_label(name)
        except ValueError as exc:
            raise InputError("--labels", i, "label", str(exc)) from None
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    config = WorkspaceConfig() if database_url is None else replace(WorkspaceConfig(), database_url=database_url)
    write_config(root, config)
    try:
        store = open_store_unchecked(root)
        store.db.create_schema()
        with store.db.write() as s:
            s.add(User(name=SYSTEM_USER, role="system"))
            if labels:
                add_labels(s, labels)
    except SQLAlchemyError as exc:
        (root / CONFIG_NAME).unlink(missing_ok=True)
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise WorkspaceError(f"{config.database_url}: cannot create the database ({exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]})") from None
    return store


def open_store_unchecked(root: Path) -> Store:
    workspace = load_workspace(root)
    return Store(workspace, Database(workspace.database_url))
