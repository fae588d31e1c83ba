"""The busy policy of ``Database.write`` on a real SQLite file, against a write lock held by another
connection: waited out when it ends in time, one ``DatabaseBusyError`` line when it does not."""
from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest

import storage.db
from storage.db import BUSY_TIMEOUT_MS
from storage.errors import DatabaseBusyError
from storage.jobs import enqueue, recent_jobs


@contextmanager
def write_lock_held(store, seconds: float):
    """Another connection holds the write lock (``BEGIN IMMEDIATE``) for ``seconds`` from when this opens."""
    locked, done = threading.Event(), threading.Event()

    def hold():
        other = sqlite3.connect(store.db.engine.url.database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        done.wait(seconds)
        other.execute("ROLLBACK")
        other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait()
    try:
        yield
    finally:
        done.set()
        holder.join()


def test_a_write_waits_out_a_lock_held_longer_than_sqlites_own_wait(make_workspace):
    store = make_workspace()
    runs = []
    started = time.monotonic()
    with write_lock_held(store, 3 * BUSY_TIMEOUT_MS / 1000):
        with store.db.write() as s:
            runs.append(enqueue(s, "export", {}).id)
        waited = time.monotonic() - started
    assert waited >= 2 * BUSY_TIMEOUT_MS / 1000  # more than one of SQLite's own waits: retried, not failed
    assert len(runs) == 1  # the block ran once
    with store.db.read() as s:
        assert [job.id for job in recent_jobs(s)] == runs


def test_a_write_still_busy_after_the_bound_fails_with_one_line_and_runs_nothing(make_workspace, monkeypatch):
    monkeypatch.setattr(storage.db, "BUSY_RETRY_SECONDS", 2.0)
    store = make_workspace()
    runs = []
    with write_lock_held(store, 10.0):
        started = time.monotonic()
        with pytest.raises(DatabaseBusyError) as raised:
            with store.db.write():
                runs.append(1)
        waited = time.monotonic() - started
    assert str(raised.value) == "the database stayed busy for 2 s (another process is writing a lot); try again"
    assert runs == []
    assert 2.0 <= waited < 2.0 + BUSY_TIMEOUT_MS / 1000 + 1.0


def test_a_bulk_write_gets_its_page_cache_and_the_connection_gets_its_own_back(make_workspace):
    """``write(cache_mib=...)`` sizes SQLite's page cache for that transaction only, also when it fails."""
    from sqlalchemy import text

    store = make_workspace()
    with store.db.write() as s:
        default = s.scalar(text("PRAGMA cache_size"))
    with store.db.write(cache_mib=64) as s:
        assert s.scalar(text("PRAGMA cache_size")) == -64 * 1024
    with pytest.raises(RuntimeError), store.db.write(cache_mib=32) as s:
        raise RuntimeError("the bulk write failed")
    for _ in range(3):  # whichever pooled connection a later transaction gets
        with store.db.write() as s:
            assert s.scalar(text("PRAGMA cache_size")) == default
        with store.db.read() as s:
            assert s.scalar(text("PRAGMA cache_size")) == default
