"""Job queries on a real SQLite file, and (where marked) on a throw-away PostgreSQL server too."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest

from storage.errors import NotFoundError, PairlabError
from storage.jobs import (
    claim_job, enqueue, enqueue_once, fail_orphaned_jobs, fail_stale_jobs, finish_job, get_job, heartbeat,
    report_progress, request_cancel, running_worker_pids,
)
from storage.model_versions import add_model_version
from storage.models import Job, utcnow
from storage.store import init_workspace
from tests.support.cli import assert_user_error, pairlab


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


def _age(store, job_id: int, seconds: float) -> None:
    """Move a running job's start and heartbeat ``seconds`` into the past."""
    with store.db.write() as s:
        job = s.get(Job, job_id)
        job.started_at = job.heartbeat_at = utcnow() - timedelta(seconds=seconds)


def test_claim_and_progress_write_the_heartbeat(make_workspace):
    store = make_workspace()
    with store.db.write() as s:
        job_id = enqueue(s, "encode", {}).id
        claimed = claim_job(s)
    assert claimed.heartbeat_at == claimed.started_at
    _age(store, job_id, 60)
    with store.db.write() as s:
        assert report_progress(s, job_id, 0.5, "half") is False
    with store.db.write() as s:
        assert heartbeat(s, job_id) is False
        job = get_job(s, job_id)
    assert utcnow() - job.heartbeat_at < timedelta(seconds=5) and job.started_at < job.heartbeat_at


def test_a_running_job_with_a_stale_heartbeat_is_failed_and_a_fresh_one_kept(tmp_path, database_url):
    store = init_workspace(tmp_path / "ws", database_url=database_url)
    try:
        with store.db.write() as s:
            stale, fresh, never = (enqueue(s, kind, {}).id for kind in ("train", "export", "encode"))
            claim_job(s)
            claim_job(s)
        _age(store, stale, 121)
        _age(store, fresh, 119)
        with store.db.write() as s:
            failed = fail_stale_jobs(s, 120)
        assert [job.id for job in failed] == [stale]
        with store.db.read() as s:
            states = {job_id: get_job(s, job_id) for job_id in (stale, fresh, never)}
        assert states[stale].status == "failed" and states[stale].finished_at is not None
        assert states[stale].message == (f"no heartbeat from its worker (pid {os.getpid()}) for over 120 s: the "
                                         "worker stopped before the job finished")
        assert (states[fresh].status, states[never].status) == ("running", "queued")
    finally:
        store.close()


def test_cancel_a_queued_job_at_once_a_running_one_by_request(tmp_path, database_url):
    store = init_workspace(tmp_path / "ws", database_url=database_url)
    try:
        with store.db.write() as s:
            running, queued = enqueue(s, "train", {}).id, enqueue(s, "train", {"other": 1}).id
            claim_job(s)
        with store.db.write() as s:
            assert report_progress(s, running, 0.1, "epoch 1") is False
            now_cancelled, requested = request_cancel(s, queued), request_cancel(s, running)
        assert (now_cancelled.status, now_cancelled.message, now_cancelled.finished) == \
            ("cancelled", "cancelled before it started", True)
        assert (requested.status, requested.cancel_requested) == ("running", True)
        with store.db.write() as s:
            assert claim_job(s) is None  # the cancelled job is never started
            assert report_progress(s, running, 0.2, "epoch 2") is True
            assert heartbeat(s, running) is True
            finish_job(s, running, error="cancelled on request", cancelled=True)
        with store.db.write() as s:
            assert get_job(s, running).status == "cancelled"
            for job_id in (running, queued):
                with pytest.raises(PairlabError, match=rf"job {job_id} \(train\) is already cancelled; there is "
                                                       "nothing to cancel"):
                    request_cancel(s, job_id)
            with pytest.raises(NotFoundError, match="job 999 does not exist"):
                request_cancel(s, 999)
    finally:
        store.close()


def test_a_cancelled_train_job_whose_model_was_committed_is_done(make_workspace):
    store = make_workspace()
    with store.db.write() as s:
        job_id = enqueue(s, "train", {}).id
        claim_job(s)
        add_model_version(s, path="models/a.pt", parent_version=None, labelled_count=3, metrics={},
                          config={"job_id": job_id})
        finish_job(s, job_id, error="cancelled on request", cancelled=True)
        job = get_job(s, job_id)
    assert (job.status, job.result["version"]) == ("done", 1)
    assert job.message == "done: model v1 was recorded before the job was cut short (cancelled on request)"


def test_a_second_identical_job_is_not_queued_while_one_is_but_may_be_after_a_cancel(make_workspace):
    store = make_workspace()
    with store.db.write() as s:
        first = enqueue_once(s, "train", {"actor": "op", "warm_start": None})
        again = enqueue_once(s, "train", {"actor": "op", "warm_start": None})
        other = enqueue_once(s, "train", {"actor": "op", "warm_start": True})
    assert again.id == first.id and other.id != first.id
    with store.db.write() as s:
        request_cancel(s, first.id)
        assert enqueue_once(s, "train", {"actor": "op", "warm_start": None}).id not in (first.id, other.id)


def test_the_jobs_verbs(make_workspace):
    store = make_workspace()
    with store.db.write() as s:
        job_id = enqueue(s, "export", {}).id
    cancelled = pairlab("jobs", "cancel", store.root, job_id)
    assert cancelled.returncode == 0 and f"job {job_id} (export) cancelled" in cancelled.stderr
    assert pairlab("jobs", "list", store.root).stdout == f"{job_id}\texport\tcancelled\t0%\tcancelled before it started\n"
    assert_user_error(pairlab("jobs", "cancel", store.root, job_id), f"job {job_id} (export) is already cancelled")
    assert_user_error(pairlab("jobs", "cancel", store.root, 999), "job 999 does not exist")
