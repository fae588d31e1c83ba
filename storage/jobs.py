"""Background jobs in the database: queued → running → done | failed, with progress and a message.

Pages enqueue; ``pairlab worker`` claims one job at a time and reports progress, so no heavy work
runs in a page's script thread (DESIGN §7).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.errors import NotFoundError
from storage.model_versions import model_version_of_job
from storage.models import Job, utcnow

JOB_KINDS = ("encode", "train", "select", "export", "audit")


@dataclass(frozen=True)
class JobView:
    id: int
    kind: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    progress: float
    message: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


def _view(job: Job) -> JobView:
    return JobView(job.id, job.kind, job.status, dict(job.params or {}), job.result, job.progress, job.message,
                   job.created_at, job.started_at, job.finished_at)


def enqueue(session: Session, kind: str, params: dict[str, Any], created_by: int | None = None) -> JobView:
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind {kind!r}; allowed: {', '.join(JOB_KINDS)}")
    job = Job(kind=kind, params=params, created_by=created_by, message="queued")
    session.add(job)
    session.flush()
    return _view(job)


def claim_job(session: Session) -> JobView | None:
    """Mark the oldest queued job running for this process (call inside a write transaction).

    Each job is started by one worker only: SQLite's write transaction excludes every other writer;
    PostgreSQL locks the job's row with ``FOR UPDATE SKIP LOCKED``, so a second worker takes the next
    queued job instead of waiting for, and then repeating, this one.
    """
    job = session.scalar(select(Job).where(Job.status == "queued").order_by(Job.id).limit(1)
                         .with_for_update(skip_locked=True))
    if job is None:
        return None
    job.status, job.started_at, job.worker_pid, job.message = "running", utcnow(), os.getpid(), "started"
    session.flush()
    return _view(job)


def report_progress(session: Session, job_id: int, progress: float, message: str) -> None:
    session.execute(update(Job).where(Job.id == job_id)
                    .values(progress=min(max(progress, 0.0), 1.0), message=message[:1000]))


def finish_job(session: Session, job_id: int, *, result: dict[str, Any] | None = None, error: str | None = None) -> None:
    """Mark the job done with ``result``, or failed with ``error`` (see ``_finish`` for a train job's error)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} does not exist")
    _finish(session, job, result, error)


def fail_orphaned_jobs(session: Session, live_pids: set[int]) -> list[JobView]:
    """Fail the jobs left ``running`` by a worker that died (see ``_finish`` for a train job); returns them."""
    rows = session.scalars(select(Job).where(Job.status == "running")).all()
    orphaned = [j for j in rows if j.worker_pid not in live_pids]
    for job in orphaned:
        _finish(session, job, None, "worker stopped before the job finished")
    return [_view(j) for j in orphaned]


def _finish(session: Session, job: Job, result: dict[str, Any] | None, error: str | None) -> None:
    """Done with ``result``, or failed with ``error``; but a ``train`` job whose model version was committed
    (the version's ``config["job_id"]``) before the error (its worker stopping or killed, say) is done, with
    that version as its result."""
    trained = model_version_of_job(session, job.id, since=job.started_at) if error and job.kind == "train" else None
    message = error or "done"
    if trained is not None:
        result, error = trained.summary(), None
        message = f"done: model v{trained.version} was recorded before the job was cut short ({message})"
    job.finished_at, job.result, job.message = utcnow(), result, message[:1000]
    job.status = "failed" if error else "done"
    if not error:
        job.progress = 1.0
    session.flush()


def get_job(session: Session, job_id: int) -> JobView:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} does not exist")
    return _view(job)


def recent_jobs(session: Session, limit: int = 20, *, kinds: Sequence[str] = ()) -> list[JobView]:
    """The latest ``limit`` jobs, newest first; only those of ``kinds`` when given."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if kinds:
        query = query.where(Job.kind.in_(list(kinds)))
    return [_view(j) for j in session.scalars(query)]


def running_worker_pids(session: Session) -> set[int]:
    """The distinct ``worker_pid``s of jobs marked running (jobs without a pid left out)."""
    return set(session.scalars(select(Job.worker_pid).where(Job.status == "running", Job.worker_pid.is_not(None))))


def enqueue_once(session: Session, kind: str, params: dict[str, Any], created_by: int | None = None) -> JobView:
    """The queued job of this kind with the same params if there is one (a double click queues one
    retrain, not two), else a new one. Call inside a write transaction."""
    for job in session.scalars(select(Job).where(Job.kind == kind, Job.status == "queued").order_by(Job.id)):
        if job.params == params:
            return _view(job)
    return enqueue(session, kind, params, created_by)
