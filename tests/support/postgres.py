"""A throw-away PostgreSQL server for tests: its own cluster in a temp folder, on a free loopback port."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh database; the cluster is stopped and deleted afterwards. It runs
    without fsync: a throw-away cluster never needs to survive a crash of its machine."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="pairlab-pg-"))
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(folder, "postgres", "postgres")
    data = folder / "data"
    port = _free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "pairlab", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
                    "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=50 "
                          "-c fsync=off -c synchronous_commit=off -c full_page_writes=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://pairlab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def database_url(kind: str) -> Iterator[str | None]:
    """``sqlite``: None (the workspace's own file); ``postgresql``: a fresh server's URL. Skips the test
    when the server is not installed, or fails it under ``PAIRLAB_REQUIRE_POSTGRES=1``."""
    if kind == "sqlite":
        yield None
        return
    import pytest

    if postgres_bin() is None:
        if os.environ.get("PAIRLAB_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL server binaries are missing but PAIRLAB_REQUIRE_POSTGRES=1")
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql); CI installs it")
    with postgres_server() as url:
        yield url


class DatabaseSnapshot:
    """Every row of every pairlab table of a database, to put it back exactly (ids and id sequences too):
    the per-test reset of a module's one database, far cheaper than a new database per test."""

    def __init__(self, engine):
        from sqlalchemy import select

        from storage.models import Base

        self._tables = Base.metadata.sorted_tables  # parents before children
        with engine.connect() as conn:
            self._rows = {t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in self._tables}

    def restore(self, engine) -> None:
        """Empty every table and insert the saved rows, in one transaction; each id sequence then continues
        after the largest saved id. ``DELETE``, not ``TRUNCATE``: on these few rows it is ten times faster
        (``TRUNCATE`` makes new files for every table and index)."""
        from sqlalchemy import text

        with engine.begin() as conn:
            for table in reversed(self._tables):  # children before parents
                conn.execute(table.delete())
            for table in self._tables:
                if self._rows[table.name]:
                    conn.execute(table.insert(), self._rows[table.name])
                for column in table.primary_key.columns:
                    if column.autoincrement is True or (column.autoincrement == "auto" and
                                                        column.type.python_type is int and
                                                        len(table.primary_key.columns) == 1):
                        conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                                          f"COALESCE(MAX({column.name}), 0) + 1, false) FROM {table.name}"))
