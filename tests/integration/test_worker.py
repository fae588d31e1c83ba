"""The background worker and ``pairlab serve``'s guards, on a real SQLite workspace."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from app.jobs.handlers import JOB_HANDLERS
from app.jobs.progress import JobProgress
from app.cli.serve import serve, streamlit_command
from app.jobs.worker import run_worker
from storage.errors import PairlabError
from storage.features import list_features
from storage.jobs import enqueue, get_job
from storage.model_versions import latest_model_version
from storage.models import Job
from tests.integration.workbench_fixtures import build_workspace


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


def test_worker_process_stops_on_sigterm(store):
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", str(store.root)], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    line = ""
    while "watching" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "stopped after 0 job(s)" in proc.stderr.read()


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
