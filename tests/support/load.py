"""Stand-alone load processes for the concurrency tests; each prints one JSON line when it ends.

``python -m tests.support.load WORKSPACE MODE BARRIER``:

- ``jobs``: a worker's loop at the storage level (``claim_job`` + ``finish_job``, as
  ``app.jobs.worker.run_next_job`` does, with a trivial job in between) until no job is queued;
  reports the job ids it started.
- ``export``: ``export_workspace`` to jsonl again and again until the barrier says stop (a long read).
- ``progress``: short write transactions (a job's progress reports) again and again until stop.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from storage.exporters import export_workspace
from storage.jobs import claim_job, enqueue, finish_job, report_progress
from storage.store import Store, open_store
from tests.support.barrier import stopped, wait_for_go

PROGRESS_PAUSE_SECONDS = 0.002


def run_jobs(store: Store, _barrier: Path) -> dict:
    started = []
    while True:
        with store.db.write() as s:
            job = claim_job(s)
        if job is None:
            return {"started": started}
        started.append(job.id)
        time.sleep(0.001)  # the job itself
        with store.db.write() as s:
            finish_job(s, job.id, result={})


def run_exports(store: Store, barrier: Path) -> dict:
    out = store.root / "exports" / "load.jsonl"
    out.parent.mkdir(exist_ok=True)
    exports = 0
    while not stopped(barrier):
        export_workspace(store, "jsonl", out)
        exports += 1
    return {"exports": exports}


def run_progress(store: Store, barrier: Path) -> dict:
    with store.db.write() as s:
        job_id = enqueue(s, "train", {}).id
    writes = 0
    while not stopped(barrier):
        with store.db.write() as s:
            report_progress(s, job_id, (writes % 100) / 100, f"step {writes}")
        writes += 1
        time.sleep(PROGRESS_PAUSE_SECONDS)
    return {"writes": writes}


MODES = {"jobs": run_jobs, "export": run_exports, "progress": run_progress}

if __name__ == "__main__":
    root, mode, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = open_store(root)
    wait_for_go(barrier)
    try:
        report = MODES[mode](store, barrier)
    finally:
        store.close()
    print(json.dumps({"mode": mode, **report}))
