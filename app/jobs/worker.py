"""``pairlab worker``: claims queued jobs one at a time and runs them through ``app.jobs.handlers.JOB_HANDLERS``.

One worker per workspace: it holds an exclusive lock on ``WS/.worker.lock`` for its life, and a second
one is refused. At start-up, under that lock, it finishes the jobs a dead worker left running (its pid is
gone, or its heartbeat is stale) and removes what a crash left in the workspace (``app.jobs.litter``).
Before each claim it fails jobs whose heartbeat went stale (``storage.jobs.fail_stale_jobs``). While a job
runs, a timer thread writes its heartbeat and picks up a cancel request (``storage.jobs``).
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
from app.jobs.progress import JobCancelled, JobProgress, WorkerStopping
from app.services.settings import open_workspace
from storage.errors import PairlabError
from storage.jobs import (
    JobView, claim_job, fail_orphaned_jobs, fail_stale_jobs, finish_job, heartbeat, report_progress,
    running_worker_pids,
)
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
    """Fail jobs whose heartbeat went stale, then claim and run the oldest queued job; False when none was queued."""
    config = store.workspace.config.jobs
    with store.db.write() as s:
        stale = fail_stale_jobs(s, config.stale_after_seconds)
        job = claim_job(s)
    for orphan in stale:
        log.warning("job %d (%s): %s", orphan.id, orphan.kind, orphan.message)
    if job is None:
        return False
    log.info("job %d (%s) started", job.id, job.kind)
    cancel = threading.Event()
    with _heartbeat(store, job.id, config.heartbeat_seconds, cancel):
        result, error, cancelled = _run(store, job, stop, cancel)
    with store.db.write() as s:
        finish_job(s, job.id, result=result, error=error, cancelled=cancelled)
    outcome = "cancelled" if cancelled else f"failed: {error}" if error else "done"
    log.info("job %d (%s) %s", job.id, job.kind, outcome)
    return True


def _run(store: Store, job: JobView, stop: threading.Event | None,
         cancel: threading.Event) -> tuple[dict | None, str | None, bool]:
    """``(result, error, cancelled)`` of running ``job``'s handler."""
    handler = JOB_HANDLERS.get(job.kind)
    if handler is None:
        return None, f"no handler for job kind {job.kind!r} in this build", False

    def report(fraction: float, message: str) -> bool:
        with store.db.write() as s:
            return report_progress(s, job.id, fraction, message)

    try:
        return handler(store, {**job.params, "job_id": job.id}, JobProgress(report, stop=stop, cancel=cancel)), \
            None, False
    except JobCancelled as exc:
        return None, _one_line(str(exc)), True
    except (PairlabError, WorkerStopping) as exc:
        return None, _one_line(str(exc)), False
    except Exception as exc:  # noqa: BLE001 - a failing job must not take the worker down
        log.exception("job %d (%s) crashed", job.id, job.kind)
        return None, _one_line(f"{exc.__class__.__name__}: {exc}"), False


@contextmanager
def _heartbeat(store: Store, job_id: int, seconds: float, cancel: threading.Event):
    """While the block runs, write the job's heartbeat every ``seconds`` from a thread, and set ``cancel``
    when the answer says its cancel was requested."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(seconds):
            try:
                with store.db.write() as s:
                    requested = heartbeat(s, job_id)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried at the next tick
                log.warning("job %d: heartbeat not written (%s: %s)", job_id, exc.__class__.__name__, exc)
                continue
            if requested and not cancel.is_set():
                log.info("job %d: cancel requested; stopping at its next progress report", job_id)
                cancel.set()

    thread = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _one_line(message: str) -> str:
    return " ".join(message.split())[:1000] or "failed"


def _finish_orphans(store: Store) -> None:
    """Fail the jobs a dead worker left running (its pid is gone or its heartbeat is stale), or mark them
    done when their result was committed."""
    with store.db.write() as s:
        orphans = fail_orphaned_jobs(s, {pid for pid in running_worker_pids(s) if _alive(pid)})
        orphans += fail_stale_jobs(s, store.workspace.config.jobs.stale_after_seconds)
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
