"""Two worker processes against one database (a SQLite file, and PostgreSQL where its server is
installed): each queued job is started exactly once."""
from __future__ import annotations

import pytest

from storage.jobs import enqueue
from storage.store import init_workspace
from tests.support.barrier import release, stop
from tests.support.processes import kill_left_over, report, start

N_JOBS = 150


@pytest.mark.slow
def test_two_worker_processes_start_each_job_exactly_once(tmp_path, database_url):
    store = init_workspace(tmp_path / "ws", database_url=database_url)
    with store.db.write() as s:
        queued = {enqueue(s, "export", {}).id for _ in range(N_JOBS)}
    store.close()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [start("tests.support.load", tmp_path / "ws", "jobs", barrier) for _ in range(2)]
    try:
        release(barrier, len(procs))
        first, second = (set(report(proc)["started"]) for proc in procs)
    finally:
        stop(barrier)
        kill_left_over(procs)
    assert first & second == set()
    assert first | second == queued
    assert first and second  # both really worked
