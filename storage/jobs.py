"""Background jobs in the database: queued → running → done | failed | cancelled, with progress and a message.

Pages enqueue; ``pairlab worker`` claims one job at a time and reports progress, so no heavy work
runs in a page's script thread (DESIGN §7).

Liveness: while a job runs its worker writes ``heartbeat_at`` (with every progress write, and from a
timer every ``[jobs].heartbeat_seconds``). A ``running`` job whose heartbeat is older than
``[jobs].stale_after_seconds`` lost its worker; the next worker to start or claim a job fails it with a
message (``fail_stale_jobs``). Such jobs are failed, not requeued: a job that killed its worker would
otherwise kill every next one; the operator relaunches it.

Cancel: ``request_cancel`` cancels a queued job at once; for a running one it records the request, and
the worker sees it in the answer to its next progress or heartbeat write and stops the job at the
handler's next progress call (a safe point: a training job has then written nothing).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.errors import NotFoundError, PairlabError
from storage.model_versions import model_version_of_job
from storage.models import Job, utcnow

JOB_KINDS = ("encode", "train", "select", "export", "audit")
FINISHED_STATUSES = ("done", "failed", "cancelled")


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
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


def _view(job: Job) -> JobView:
    return JobView(job.id, job.kind, job.status, dict(job.params or {}), job.result, job.progress, job.message,
                   job.created_at, job.started_at, job.finished_at, job.heartbeat_at,
                   job.cancel_requested_at is not None)


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
    now = utcnow()
    job.status, job.started_at, job.heartbeat_at, job.worker_pid, job.message = "running", now, now, os.getpid(), \
        "started"
    session.flush()
    return _view(job)


def report_progress(session: Session, job_id: int, progress: float, message: str) -> bool:
    """Record a running job's progress (and heartbeat); True when a cancel of the job was requested."""
    return _touch(session, job_id, progress=min(max(progress, 0.0), 1.0), message=message[:1000])


def heartbeat(session: Session, job_id: int) -> bool:
    """Record that the job's worker is alive; True when a cancel of the job was requested."""
    return _touch(session, job_id)


def _touch(session: Session, job_id: int, **values: Any) -> bool:
    requested = session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow(), **values)
                                .returning(Job.cancel_requested_at)).first()
    return requested is not None and requested[0] is not None


def request_cancel(session: Session, job_id: int) -> JobView:
    """Cancel a queued job now, or ask the worker to stop a running one at its next safe point.

    Raises ``NotFoundError`` for an unknown job and ``PairlabError`` for a finished one. Call inside a
    write transaction (the row is locked, so a worker cannot claim the job meanwhile).
    """
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None:
        raise NotFoundError(f"job {job_id} does not exist")
    if job.status in FINISHED_STATUSES:
        raise PairlabError(f"job {job_id} ({job.kind}) is already {job.status}; there is nothing to cancel")
    now = utcnow()
    if job.status == "queued":
        job.status, job.finished_at, job.message = "cancelled", now, "cancelled before it started"
    elif job.cancel_requested_at is None:
        job.cancel_requested_at = now
    session.flush()
    return _view(job)


def finish_job(session: Session, job_id: int, *, result: dict[str, Any] | None = None, error: str | None = None,
               cancelled: bool = False) -> None:
    """Mark the job done with ``result``, failed with ``error``, or (``cancelled``) cancelled with ``error`` as
    its message (see ``_finish`` for a train job's error)."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} does not exist")
    _finish(session, job, result, error, cancelled=cancelled)


def fail_stale_jobs(session: Session, stale_after_seconds: float) -> list[JobView]:
    """Fail the ``running`` jobs whose heartbeat (or start, for a job without one) is older than
    ``stale_after_seconds``: their worker died (see ``_finish`` for a train job); returns them."""
    cutoff = utcnow() - timedelta(seconds=stale_after_seconds)
    rows = session.scalars(select(Job).where(Job.status == "running",
                                             func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at) < cutoff)
                           .with_for_update(skip_locked=True)).all()
    for job in rows:
        _finish(session, job, None, f"no heartbeat from its worker (pid {job.worker_pid}) for over "
                                    f"{stale_after_seconds:g} s: the worker stopped before the job finished")
    return [_view(j) for j in rows]


def fail_orphaned_jobs(session: Session, live_pids: set[int]) -> list[JobView]:
    """Fail the jobs left ``running`` by a worker that died (see ``_finish`` for a train job); returns them."""
    rows = session.scalars(select(Job).where(Job.status == "running")).all()
    orphaned = [j for j in rows if j.worker_pid not in live_pids]
    for job in orphaned:
        _finish(session, job, None, "worker stopped before the job finished")
    return [_view(j) for j in orphaned]


def _finish(session: Session, job: Job, result: dict[str, Any] | None, error: str | None, *,
            cancelled: bool = False) -> None:
    """Done with ``result``, or failed (``cancelled``: cancelled) with ``error``; but a ``train`` job whose model
    version was committed (the version's ``config["job_id"]``) before the error (its worker stopping or killed,
    or a cancel, say) is done, with that version as its result."""
    trained = model_version_of_job(session, job.id, since=job.started_at) if error and job.kind == "train" else None
    message = error or "done"
    if trained is not None:
        result, error = trained.summary(), None
        message = f"done: model v{trained.version} was recorded before the job was cut short ({message})"
    job.finished_at, job.result, job.message = utcnow(), result, message[:1000]
    job.status = "done" if not error else "cancelled" if cancelled else "failed"
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
