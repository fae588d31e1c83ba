"""``pairlab worker``: claims queued jobs one at a time and runs them through ``app.jobs.handlers.JOB_HANDLERS``.

One worker per workspace: it holds an exclusive lock on ``WS/.worker.lock`` for its life, and a second
one is refused. At start-up, under that lock, it finishes the jobs a dead worker left running and
removes what a crash left in the workspace (``app.jobs.litter``).
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from app.jobs.handlers import JOB_HANDLERS
from app.jobs.litter import remove_litter
from app.jobs.progress import JobProgress, WorkerStopping
from app.services.settings import open_workspace
from storage.errors import PairlabError
from storage.jobs import JobView, claim_job, fail_orphaned_jobs, finish_job, report_progress, running_worker_pids
from storage.store import Store

log = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 1.0
LOCK_NAME = ".worker.lock"


class WorkerRunningError(PairlabError):
    """Another worker holds the workspace's worker lock."""


def run_worker(root: str | Path, *, poll_seconds: float = DEFAULT_POLL_SECONDS,
               stop_event: threading.Event | None = None, once: bool = False) -> int:
    """Run jobs until stopped; return how many ran.

    stop_event: set it to stop after the current job (its next progress report fails the job when it is
    long). Without one, SIGTERM and SIGINT stop the worker (main thread only).
    once: run the jobs queued now, then return instead of polling.
    Raises ``WorkerRunningError`` when another worker holds the workspace's lock.
    """
    stop = stop_event or threading.Event()
    store = open_workspace(root)
    ran = 0
    try:
        with _worker_lock(store.root), _stop_on_signals(stop, install=stop_event is None):
            _finish_orphans(store)
            remove_litter(store)
            log.info("worker %d watching %s for jobs", os.getpid(), store.root)
            while not stop.is_set():
                if run_next_job(store, stop):
                    ran += 1
                elif once:
                    break
                else:
                    stop.wait(poll_seconds)
    finally:
        store.close()
    log.info("worker %d stopped after %d job(s)", os.getpid(), ran)
    return ran


def run_next_job(store: Store, stop: threading.Event | None = None) -> bool:
    """Claim and run the oldest queued job; False when none was queued."""
    with store.db.write() as s:
        job = claim_job(s)
    if job is None:
        return False
    log.info("job %d (%s) started", job.id, job.kind)
    result, error = _run(store, job, stop)
    with store.db.write() as s:
        finish_job(s, job.id, result=result, error=error)
    log.info("job %d (%s) %s", job.id, job.kind, f"failed: {error}" if error else "done")
    return True


def _run(store: Store, job: JobView, stop: threading.Event | None) -> tuple[dict | None, str | None]:
    handler = JOB_HANDLERS.get(job.kind)
    if handler is None:
        return None, f"no handler for job kind {job.kind!r} in this build"

    def report(fraction: float, message: str) -> None:
        with store.db.write() as s:
            report_progress(s, job.id, fraction, message)

    try:
        return handler(store, {**job.params, "job_id": job.id}, JobProgress(report, stop=stop)), None
    except (PairlabError, WorkerStopping) as exc:
        return None, _one_line(str(exc))
    except Exception as exc:  # noqa: BLE001 - a failing job must not take the worker down
        log.exception("job %d (%s) crashed", job.id, job.kind)
        return None, _one_line(f"{exc.__class__.__name__}: {exc}")


def _one_line(message: str) -> str:
    return " ".join(message.split())[:1000] or "failed"


def _finish_orphans(store: Store) -> None:
    """Fail the jobs a dead worker left running, or mark them done when their result was committed."""
    with store.db.write() as s:
        orphans = fail_orphaned_jobs(s, {pid for pid in running_worker_pids(s) if _alive(pid)})
    for job in orphans:
        log.warning("job %d (%s) was left running by a stopped worker: %s", job.id, job.kind, job.message)


@contextmanager
def _worker_lock(root: Path):
    """Hold an exclusive ``flock`` on ``root/.worker.lock`` (with our pid in it) until the block ends.

    The kernel drops the lock when the process dies, even by ``kill -9``, so a stale file never blocks.
    """
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise WorkerRunningError(f"{root}: another worker (pid {holder}) is already running for this "
                                     "workspace; stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a job "running" under our own pid is from an earlier process that had this pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _stop_on_signals(stop: threading.Event, *, install: bool):
    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        log.info("worker received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
