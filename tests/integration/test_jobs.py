"""Job queries on a real SQLite file."""
from __future__ import annotations

import os
from datetime import timedelta

from storage.jobs import claim_job, enqueue, fail_orphaned_jobs, get_job, running_worker_pids
from storage.model_versions import add_model_version
from storage.models import Job, utcnow


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


def test_an_orphaned_train_job_whose_model_was_committed_is_done_with_it(make_workspace):
    """Killed after its model version committed: done with that version; the other orphans fail."""
    store = make_workspace()
    started = utcnow() - timedelta(minutes=5)
    with store.db.write() as s:
        jobs = [Job(kind=kind, status="running", worker_pid=999_999, started_at=started)
                for kind in ("train", "train", "select")]
        s.add_all(jobs)
        s.flush()
        trained, untrained, other = (job.id for job in jobs)
        add_model_version(s, path="models/a.pt", parent_version=None, labelled_count=3, metrics={"seconds": 1.0},
                          config={"job_id": untrained + 100})  # another job's version (e.g. pairlab train)
        add_model_version(s, path="models/b.pt", parent_version=None, labelled_count=5, metrics={"seconds": 2.0},
                          config={"job_id": trained})
    with store.db.write() as s:
        finished = fail_orphaned_jobs(s, live_pids=set())
    assert sorted(job.id for job in finished) == [trained, untrained, other]
    with store.db.read() as s:
        done, failed, select = (get_job(s, job_id) for job_id in (trained, untrained, other))
    assert (done.status, done.progress, done.result) == ("done", 1.0, {"version": 2, "labelled": 5,
                                                                       "metrics": {"seconds": 2.0}})
    assert done.message == ("done: model v2 was recorded before the job was cut short (worker stopped before the "
                            "job finished)")
    assert failed.status == select.status == "failed"
    assert failed.message == "worker stopped before the job finished"
