"""Job queries on a real SQLite file."""
from __future__ import annotations

import os

from storage.jobs import claim_job, enqueue, running_worker_pids
from storage.models import Job


def test_running_worker_pids_are_the_distinct_pids_of_running_jobs(make_workspace):
    store = make_workspace()
    with store.db.write() as s:
        for kind in ("encode", "train", "select"):
            enqueue(s, kind, {})
        claim_job(s)
        claim_job(s)  # two jobs running under this process, one still queued
        s.add_all([Job(kind="export", status="running", worker_pid=None),
                   Job(kind="export", status="done", worker_pid=4242),
                   Job(kind="export", status="failed", worker_pid=4343)])
    with store.db.read() as s:
        assert running_worker_pids(s) == {os.getpid()}
