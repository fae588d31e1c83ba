"""The background worker and ``pairlab serve``'s guards, on a real SQLite workspace."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app.jobs.handlers import JOB_HANDLERS
from app.jobs.progress import JobProgress
from app.cli.serve import serve, streamlit_command
from app.jobs.worker import LOCK_NAME, WorkerRunningError, run_next_job, run_worker
from app.services import train
from app.services.models import cached_model, current_model
from storage.errors import PairlabError
from storage.features import list_features
from storage.jobs import claim_job, enqueue, get_job, report_progress, request_cancel
from storage.model_versions import latest_model_version
from storage.models import Job, ModelVersion, utcnow
from tests.integration.workbench_fixtures import FAST_TRAIN, build_trainable, build_workspace, set_table
from tests.support.servers import children_of, free_port, port_is_free, running, wait_healthy
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store(tmp_path):
    store = build_workspace(tmp_path / "ws", budget=0)
    yield store
    store.close()


def job_state(store, job_id):
    with store.db.read() as s:
        return get_job(s, job_id)


def queue(store, kind, params):
    with store.db.write() as s:
        return enqueue(s, kind, params).id


def test_select_job_runs_and_records_its_result(store):
    job_id = queue(store, "select", {"actor": "op", "strategy": "random", "budget": 3, "seed": 1})
    assert run_worker(store.root, once=True) == 1
    job = job_state(store, job_id)
    assert job.status == "done" and job.progress == 1.0
    assert job.result == {"round": 1, "strategy": "random", "selected": 3, "queued_slots": 3}


def test_a_failing_job_gets_a_one_line_message_and_the_worker_goes_on(store):
    bad = queue(store, "select", {"actor": "op", "strategy": "random", "budget": 999})
    good = queue(store, "select", {"actor": "op", "strategy": "random", "budget": 1})
    assert run_worker(store.root, once=True) == 2
    failed = job_state(store, bad)
    assert failed.status == "failed" and "exceeds the 8 selectable pairs" in failed.message
    assert "\n" not in failed.message
    assert job_state(store, good).status == "done"


def test_a_kind_without_handler_fails_cleanly(store, monkeypatch):
    monkeypatch.delitem(JOB_HANDLERS, "train", raising=False)
    job_id = queue(store, "train", {"actor": "op"})
    run_worker(store.root, once=True)
    assert job_state(store, job_id).message == "no handler for job kind 'train' in this build"


def test_registering_a_handler_is_one_entry_and_progress_is_reported(store, monkeypatch):
    seen = []

    def encode(_store, params, progress: JobProgress):
        for i in range(1, 6):
            progress(i, 5)
            seen.append(job_state(store, job_id).progress)
        return {"encoded": params["n"]}

    monkeypatch.setitem(JOB_HANDLERS, "encode", encode)
    job_id = queue(store, "encode", {"n": 5})
    run_worker(store.root, once=True)
    job = job_state(store, job_id)
    assert job.status == "done" and job.result == {"encoded": 5}
    assert seen[0] == pytest.approx(0.2) and seen[-1] == 1.0  # first and last always written, the rest throttled


def test_stopping_fails_a_long_job_at_its_next_progress_report(store, monkeypatch):
    stop = threading.Event()

    def encode(_store, _params, progress: JobProgress):
        progress(1, 10)
        stop.set()
        progress(2, 10)
        return {}

    monkeypatch.setitem(JOB_HANDLERS, "encode", encode)
    job_id = queue(store, "encode", {})
    run_worker(store.root, stop_event=stop)
    job = job_state(store, job_id)
    assert job.status == "failed" and "stopped" in job.message


def test_orphaned_running_jobs_are_failed_on_start(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job_id = queue(store, "select", {"actor": "op", "strategy": "random", "budget": 1})
    with store.db.write() as s:
        job = s.get(Job, job_id)
        job.status, job.worker_pid = "running", dead.pid
    run_worker(store.root, once=True)
    job = job_state(store, job_id)
    assert job.status == "failed" and job.message == "worker stopped before the job finished"


def start_worker(root) -> subprocess.Popen:
    """``pairlab worker ROOT`` as a process, returned once it watches for jobs."""
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", str(root)], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    line = ""
    while "watching" not in line and time.monotonic() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
    assert "watching" in line, f"the worker did not start (exit code {proc.poll()})"
    return proc


def test_worker_process_stops_on_sigterm(store):
    proc = start_worker(store.root)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "stopped after 0 job(s)" in proc.stderr.read()


@pytest.mark.slow
def test_a_second_worker_on_the_same_workspace_is_refused_with_one_line(store):
    first = start_worker(store.root)
    try:
        second = subprocess.run([sys.executable, "-m", "app.cli", "worker", str(store.root)], capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 2
        assert second.stderr.strip() == (f"pairlab: error: {store.root}: another worker (pid {first.pid}) is "
                                         "already running for this workspace; stop it first")
        assert first.poll() is None  # the first one goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=15)
    assert run_worker(store.root, once=True) == 0  # the lock goes with its worker


def test_the_worker_lock_is_held_for_the_workers_life(store):
    stop = threading.Event()
    holder = threading.Thread(target=run_worker, args=(store.root,),
                              kwargs={"stop_event": stop, "poll_seconds": 0.05})
    holder.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (store.root / LOCK_NAME).exists():
            time.sleep(0.02)
        with pytest.raises(WorkerRunningError, match="another worker .* is already running"):
            run_worker(store.root, once=True)
    finally:
        stop.set()
        holder.join(timeout=10)
    assert run_worker(store.root, once=True) == 0


@pytest.mark.slow
def test_killing_serve_with_sigkill_stops_its_children_and_frees_the_port(store, tmp_path):
    """The web server and the worker die with ``pairlab serve`` even when it gets no chance to stop them."""
    port = free_port()
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", str(store.root), "--port", str(port)],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    children: list[int] = []
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, 60)
        children = children_of(proc.pid)
        assert len(children) == 2  # the worker and the web server
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (any(map(running, children)) or not port_is_free(port)):
            time.sleep(0.1)
        left = [pid for pid in children if running(pid)]
        assert not left, f"children of the killed serve still running: {left}"
        assert port_is_free(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children:  # only the ones this test started, should the test fail
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    assert run_worker(store.root, once=True) == 0  # and the worker lock is free for the next worker


def test_serve_refuses_auto_login_off_loopback(store):
    with pytest.raises(PairlabError, match="only allowed on 127.0.0.1"):
        serve(store.root, host="0.0.0.0", port=8599, auto_login="op")


def test_the_web_server_never_shows_annotators_a_traceback():
    command = streamlit_command("127.0.0.1", 8599)
    assert command[command.index("--client.showErrorDetails") + 1] == "none"


@pytest.mark.parametrize("kind, params", [
    ("export", {"format": "jsonl", "file": "out.jsonl"}),
    ("encode", {}),
    ("train", {"warm_start": None}),
])
def test_the_worker_rechecks_the_role_of_whoever_queued_the_job(store, kind, params):
    """A job row written behind the pages' back by an annotator does nothing: no file, no features, no model."""
    def effects():
        with store.db.read() as s:
            return (sorted(p.name for p in store.root.glob("exports/*")), len(list_features(s)),
                    latest_model_version(s))

    before = effects()
    job_id = queue(store, kind, {"actor": "ann", **params})
    assert run_worker(store.root, once=True) == 1
    job = job_state(store, job_id)
    assert job.status == "failed" and job.message == "user 'ann' (annotator) may not operate"
    assert effects() == before


class Killed(BaseException):
    """Stands in for SIGKILL: no handler in the worker catches it, so the job stays 'running'."""


@pytest.fixture()
def trainable(tmp_path):
    """A workspace that trains in seconds: 8 labelled pool pairs with real images, encoded; an operator."""
    store = build_trainable(tmp_path / "ws")
    yield store
    store.close()


@pytest.mark.slow
def test_a_train_job_killed_after_its_model_committed_is_reported_done(trainable, monkeypatch):
    def killed_after_commit(_store):
        raise Killed  # the version's row is committed; the embeddings come next

    monkeypatch.setattr(train, "model_embeddings", killed_after_commit)
    job_id = queue(trainable, "train", {"actor": "op"})
    with pytest.raises(Killed):
        run_worker(trainable.root, once=True)
    assert job_state(trainable, job_id).status == "running"
    run_worker(trainable.root, once=True)  # the next worker finds the job orphaned (its pid is ours)
    job = job_state(trainable, job_id)
    with trainable.db.read() as s:
        version = s.scalars(select(ModelVersion)).one()
    assert version.config["job_id"] == job_id
    assert (job.status, job.result["version"], job.progress) == ("done", 1, 1.0)
    assert job.message == ("done: model v1 was recorded before the job was cut short (worker stopped before the "
                           "job finished)")


@pytest.mark.slow
def test_a_train_job_stopped_after_its_model_committed_is_done(trainable, monkeypatch):
    """SIGTERM (e.g. from a dying ``pairlab serve``) after the commit fails the next progress report, not the job."""
    stop = threading.Event()
    monkeypatch.setattr(train, "model_embeddings", lambda _store: stop.set())
    job_id = queue(trainable, "train", {"actor": "op"})
    assert run_worker(trainable.root, stop_event=stop) == 1
    job = job_state(trainable, job_id)
    assert (job.status, job.result["version"]) == ("done", 1)
    assert job.message == ("done: model v1 was recorded before the job was cut short (the worker was stopped "
                           "while the job ran)")


def test_a_cancel_request_reaches_a_job_through_the_heartbeat_between_progress_reports(store, monkeypatch):
    """The timer beats while the handler is silent, and its answer stops the job at the next progress call
    even when that call is throttled (it writes nothing)."""
    set_table(store.root, "jobs", {"heartbeat_seconds": 0.05, "stale_after_seconds": 1.0})
    seen = {}

    def encode(_store, _params, progress: JobProgress):
        progress(1, 10)
        with store.db.write() as s:
            request_cancel(s, job_id)
        time.sleep(0.3)  # silent: six beats, and less than the 0.5 s progress throttle
        seen["job"] = job_state(store, job_id)
        progress(2, 10)
        seen["went on"] = True
        return {}

    monkeypatch.setitem(JOB_HANDLERS, "encode", encode)
    job_id = queue(store, "encode", {})
    assert run_worker(store.root, once=True) == 1
    job = job_state(store, job_id)
    assert (job.status, job.message, job.progress) == ("cancelled", "cancelled on request", pytest.approx(0.1))
    assert "went on" not in seen
    assert seen["job"].heartbeat_at - seen["job"].started_at >= timedelta(seconds=0.2)


def test_a_job_whose_heartbeat_went_stale_is_failed_before_the_next_claim(store):
    """Its worker's pid is alive (reused, or another machine's), but the job has not beaten for too long."""
    stale = queue(store, "select", {"actor": "op", "strategy": "random", "budget": 1})
    queued = queue(store, "select", {"actor": "op", "strategy": "random", "budget": 1})
    with store.db.write() as s:
        job = s.get(Job, stale)
        job.status, job.worker_pid = "running", os.getppid()
        job.started_at = job.heartbeat_at = utcnow() - timedelta(seconds=121)
    assert run_next_job(store)
    failed = job_state(store, stale)
    assert failed.status == "failed"
    assert failed.message == (f"no heartbeat from its worker (pid {os.getppid()}) for over 120 s: the worker stopped "
                              "before the job finished")
    assert job_state(store, queued).status == "done"


LONG_TRAIN = {**FAST_TRAIN, "epochs": 100_000, "min_epochs": 100_000, "patience": 100_000, "max_steps": 10 ** 9}


@pytest.mark.slow
def test_cancel_stops_a_running_training_job_and_the_last_good_model_stays_current(trainable):
    queue(trainable, "train", {"actor": "op"})
    assert run_worker(trainable.root, once=True) == 1  # version 1: the last good model
    set_table(trainable.root, "train", LONG_TRAIN)
    checkpoints = sorted((trainable.root / "models").iterdir())
    worker = start_worker(trainable.root)
    try:
        job_id = queue(trainable, "train", {"actor": "op"})
        wait_for(lambda: job_state(trainable, job_id).progress > 0, what="the training to report an epoch")
        cancel = subprocess.run([sys.executable, "-m", "app.cli", "jobs", "cancel", str(trainable.root), str(job_id)],
                                capture_output=True, text=True, timeout=120, cwd=REPO)
        assert cancel.returncode == 0, cancel.stderr
        assert "is running: its worker stops it at its next progress report" in cancel.stderr
        job = wait_for(lambda: (j := job_state(trainable, job_id)).finished and j, timeout=60,
                       what="the cancel to take effect")
        assert (job.status, job.message) == ("cancelled", "cancelled on request")
        assert worker.poll() is None  # the worker goes on with the next job
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    with trainable.db.read() as s:
        assert latest_model_version(s).version == 1
    assert sorted((trainable.root / "models").iterdir()) == checkpoints
    assert current_model(trainable).version == 1
    assert cached_model(current_model(trainable).path) is not None


def test_a_cancel_that_comes_after_the_work_was_recorded_leaves_the_job_done(store):
    """The request arrives while the round is being recorded: the final progress report does not cancel it."""
    job_id = queue(store, "select", {"actor": "op", "strategy": "random", "budget": 2})

    def report_with_a_late_cancel(fraction, message):
        if fraction >= 1.0:  # "round N: ... queued": the round is committed
            with store.db.write() as s:
                request_cancel(s, job_id)
        with store.db.write() as s:
            return report_progress(s, job_id, fraction, message)

    with store.db.write() as s:
        job = claim_job(s)
    result = JOB_HANDLERS["select"](store, {**job.params, "job_id": job_id},
                                    JobProgress(report_with_a_late_cancel, min_interval=0.0))
    assert result["selected"] == 2
