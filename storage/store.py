"""Opening and creating workspaces: the configuration plus one database engine per process."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import select

from storage.db import Database
from storage.errors import WorkspaceError
from storage.models import User
from storage.vocabulary import add_labels
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
    """Open an existing workspace; raise ``WorkspaceError`` if it is missing or of another schema."""
    workspace = load_workspace(root)
    db = Database(workspace.database_url)
    db.check_schema()
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
    root.mkdir(parents=True, exist_ok=True)
    config = WorkspaceConfig() if database_url is None else replace(WorkspaceConfig(), database_url=database_url)
    write_config(root, config)
    store = open_store_unchecked(root)
    store.db.create_schema()
    with store.db.write() as s:
        if s.scalar(select(User.id).where(User.name == SYSTEM_USER)) is None:
            s.add(User(name=SYSTEM_USER, role="system"))
        if labels:
            add_labels(s, labels)
    return store


def open_store_unchecked(root: Path) -> Store:
    workspace = load_workspace(root)
    return Store(workspace, Database(workspace.database_url))
