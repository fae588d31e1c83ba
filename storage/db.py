"""Engine creation and transactions.

SQLite gets WAL, ``busy_timeout`` and foreign keys on every connection, and write transactions
start with ``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade. Any other
SQLAlchemy URL (Postgres) works unchanged.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session

from storage.errors import WorkspaceError
from storage.models import SCHEMA_VERSION, Base, Meta

BUSY_TIMEOUT_MS = 30_000


class Database:
    """One engine per process; sessions are short and owned by the caller."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_MS / 1000}} if self.is_sqlite else {"pool_pre_ping": True}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._writer = self.engine.execution_options(pairlab_write=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (deferred transaction: never blocks writers under WAL)."""
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def create_schema(self) -> None:
        Base.metadata.create_all(self.engine)
        with self.write() as s:
            if s.get(Meta, "schema_version") is None:
                s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))

    def check_schema(self) -> None:
        """Raise ``WorkspaceError`` unless the database carries this code's schema version."""
        try:
            with self.read() as s:
                row = s.scalar(select(Meta.value).where(Meta.key == "schema_version"))
        except Exception as exc:  # noqa: BLE001 - any driver error means "not our database"
            raise WorkspaceError(f"{self.url}: cannot read the pairlab schema ({exc.__class__.__name__})") from exc
        if row is None or int(row) != SCHEMA_VERSION:
            raise WorkspaceError(f"{self.url}: schema version {row}, this pairlab needs {SCHEMA_VERSION}")

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
        dbapi_connection.isolation_level = None  # let SQLAlchemy's begin event emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("pairlab_write") else "BEGIN")
