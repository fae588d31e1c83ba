"""``kill -9`` in the middle of long work (issue 14): import, encode, train, export, and a worker running a job.

A process is killed at a known point, either by a crash point (``storage.faults``: ``PAIRLAB_CRASH_AT`` makes
it SIGKILL itself there) or from outside, once the job's progress shows it is mid-way. Afterwards: the
workspace opens, no import is half written, the last good model loads and ``evaluate`` works, no partial file
is at the export target, and a restarted worker leaves no job ``running`` and removes what the crash left.
Every test runs on a SQLite file and on the throw-away PostgreSQL server.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.jobs.litter import MIN_AGE_SECONDS
from app.jobs.worker import LOCK_NAME, run_worker
from app.services.settings import open_workspace
from app.services.train import evaluate_workspace, train_workspace
from storage.faults import CRASH_ENV
from storage.features import list_features
from storage.importers import import_source
from storage.jobs import enqueue, get_job
from storage.model_versions import latest_model_version
from storage.models import ModelVersion
from storage.store import init_workspace, open_store
from tests.integration.workbench_fixtures import FAST_TRAIN, build_trainable, set_table
from tests.support.waiting import wait_for
from tests.support.workspace import copy_workspace

REPO = Path(__file__).resolve().parents[2]
LONG_TRAIN = {**FAST_TRAIN, "epochs": 100_000, "min_epochs": 100_000, "patience": 100_000, "max_steps": 10 ** 9}
KILLED = -signal.SIGKILL


def pairlab(*args, crash_at: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``pairlab args...`` as a process; ``crash_at``: the crash point it dies at."""
    env = {**os.environ, CRASH_ENV: crash_at} if crash_at else {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    return subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def start_worker(root: Path, crash_at: str | None = None) -> subprocess.Popen:
    """``pairlab worker ROOT`` as a process (its log in ``ROOT/../worker.log``)."""
    env = {**os.environ, CRASH_ENV: crash_at} if crash_at else {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    log = (root.parent / "worker.log").open("a")
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", str(root)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def age(folder: Path) -> None:
    """Make everything in ``folder`` look unchanged for longer than a running verb ever pauses."""
    old = time.time() - MIN_AGE_SECONDS - 60
    for path in folder.rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)


def job_state(store, job_id):
    with store.db.read() as s:
        return get_job(s, job_id)


def queue(store, kind: str, params: dict) -> int:
    with store.db.write() as s:
        return enqueue(s, kind, params).id


def with_settings(root: Path, service, **kwargs):
    """``service(store, **kwargs)`` on the workspace at ``root`` opened with its validated settings, then closed."""
    store = open_workspace(root)
    try:
        return service(store, **kwargs)
    finally:
        store.close()


def registered_files(store) -> set[str]:
    with store.db.read() as s:
        files = {Path(p).name for f in list_features(s) for p in (f.path, f.ids_path)}
        return files | {Path(p).name for p in s.scalars(select(ModelVersion.path))}


def assert_features_consistent(store) -> None:
    """Every registered feature set names complete files: as many rows and ids as its row says."""
    with store.db.read() as s:
        for f in list_features(s):
            matrix, ids = np.load(f.path, mmap_mode="r"), np.load(f.ids_path)
            assert matrix.shape == (f.rows, f.dim) and ids.shape == (f.rows,), f


# --------------------------------------------------------------------------- import


@pytest.fixture()
def features_workspace(tmp_path, database_url):
    """A workspace (SQLite file or PostgreSQL) holding two feature-only pairs, and a features file of two more."""
    store = init_workspace(tmp_path / "ws", database_url=database_url)
    np.savez(tmp_path / "first.npz", image=np.ones((2, 4)), text=np.ones((2, 3)), ids=np.array(["f1", "f2"]))
    import_source(store, tmp_path / "first.npz", "features")
    np.savez(tmp_path / "more.npz", image=np.full((2, 4), 2.0), text=np.full((2, 3), 2.0),
             ids=np.array(["f3", "f4"]), labels=np.array(["cat", "dog"]))
    yield store
    store.close()


def test_an_import_killed_before_its_commit_writes_nothing(features_workspace, tmp_path, workspace_state):
    store = features_workspace
    before = workspace_state(store)
    result = pairlab("import", store.root, tmp_path / "more.npz", crash_at="import.before_commit")
    assert result.returncode == KILLED, result.stderr
    again = open_store(store.root)
    try:
        after = workspace_state(again)
        assert {k: v for k, v in after.items() if k != "files"} == {k: v for k, v in before.items() if k != "files"}
        assert_features_consistent(again)
        left = {f[0] for f in after["files"]} - {f[0] for f in before["files"]}
        assert len(left) == 4 and all(name.startswith("features/precomputed-") for name in left)  # unnamed files
        age(again.root / "features")
        run_worker(again.root, once=True)  # a worker removes them
        assert [f for f in workspace_state(again)["files"] if f[0] != LOCK_NAME] == before["files"]
        report = import_source(again, tmp_path / "more.npz", "features")  # and the import can simply be rerun
        assert (report.added, report.labelled) == (2, 2)
        assert_features_consistent(again)
    finally:
        again.close()


def test_an_import_killed_after_its_commit_is_complete(features_workspace, tmp_path, workspace_state):
    store = features_workspace
    before = workspace_state(store)
    result = pairlab("import", store.root, tmp_path / "more.npz", crash_at="import.after_commit")
    assert result.returncode == KILLED, result.stderr
    again = open_store(store.root)
    try:
        after = workspace_state(again)
        assert (after["pairs"], after["events"]) == (before["pairs"] + 2, before["events"] + 2)
        assert_features_consistent(again)
        with again.db.read() as s:
            assert sorted(f.rows for f in list_features(s)) == [4, 4]
        age(again.root / "features")
        run_worker(again.root, once=True)  # removes the replaced files the killed import had not deleted yet
        assert {Path(f[0]).name for f in workspace_state(again)["files"] if f[0].endswith(".npy")} == \
            registered_files(again)
        report = import_source(again, tmp_path / "more.npz", "features")
        assert (report.added, report.skipped) == (0, 2)
    finally:
        again.close()


def test_a_manifest_import_killed_before_its_commit_writes_no_row(tmp_path, make_image, workspace_state, database_url):
    store = init_workspace(tmp_path / "ws", labels=["cat"], database_url=database_url)
    try:
        for i in range(3):
            make_image(tmp_path / "data" / f"{i}.png", color=(i * 60, 10, 10))
        (tmp_path / "data" / "m.jsonl").write_text("".join(
            json.dumps({"id": f"p{i}", "image": f"{i}.png", "text": f"pair {i}", "labels": ["cat"]}) + "\n"
            for i in range(3)), encoding="utf-8")
        before = workspace_state(store)
        result = pairlab("import", store.root, tmp_path / "data" / "m.jsonl", crash_at="import.before_commit")
        assert result.returncode == KILLED, result.stderr
    finally:
        store.close()
    again = open_store(store.root)
    try:
        assert workspace_state(again) == before
    finally:
        again.close()


# --------------------------------------------------------------------------- encode, train, export


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory) -> Path:
    """A workspace with 8 labelled pool and 4 labelled test pairs (real images, encoded) and model v1, built
    once per module; each test gets its own copy (``trained``)."""
    root = tmp_path_factory.mktemp("trained") / "ws"
    store = build_trainable(root, pool=8, test=4)
    try:
        with_settings(root, train_workspace)
    finally:
        store.close()
    return root


@pytest.fixture()
def trained(trained_template, tmp_path):
    """A copy of ``trained_template``, its feature sets and model versions pointing at the copy's files."""
    store = copy_workspace(trained_template, tmp_path / "ws")
    yield store
    store.close()


@pytest.fixture()
def trained_on_both(request, tmp_path, database_url):
    """``trained`` on SQLite; on PostgreSQL the same workspace built afresh on a throw-away server."""
    if database_url is None:
        yield request.getfixturevalue("trained")
        return
    store = build_trainable(tmp_path / "ws", pool=8, test=4, database_url=database_url)
    try:
        with_settings(store.root, train_workspace)
        yield store
    finally:
        store.close()


def assert_last_good_model(store, version: int = 1) -> None:
    """The latest version is ``version``, it loads, and ``evaluate`` on the test split works with it."""
    with store.db.read() as s:
        assert latest_model_version(s).version == version
    metrics = with_settings(store.root, evaluate_workspace)
    assert metrics["model_version"] == version and metrics["pairs"] == 4 and 0.0 <= metrics["avg"] <= 1.0


@pytest.mark.slow
def test_an_encode_killed_before_registering_keeps_the_features_and_the_model(trained_on_both):
    trained = trained_on_both
    with trained.db.read() as s:
        before = list_features(s)
    result = pairlab("encode", trained.root, crash_at="encode.before_register")
    assert result.returncode == KILLED, result.stderr
    with trained.db.read() as s:
        assert list_features(s) == before
    assert_features_consistent(trained)
    assert_last_good_model(trained)
    age(trained.root / "features")
    run_worker(trained.root, once=True)
    assert {p.name for p in (trained.root / "features").glob("*.npy")} == registered_files(trained) - \
        {p.name for p in (trained.root / "models").iterdir()}


@pytest.mark.slow
def test_a_train_killed_between_checkpoint_and_version_keeps_the_last_good_model(trained_on_both):
    trained = trained_on_both
    models = trained.root / "models"
    before = sorted(p.name for p in models.iterdir())
    result = pairlab("train", trained.root, crash_at="train.before_version")
    assert result.returncode == KILLED, result.stderr
    assert len(list(models.iterdir())) == len(before) + 1  # the new checkpoint, without its row
    evaluated = pairlab("evaluate", trained.root)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["model_version"] == 1
    assert_last_good_model(trained)
    age(models)
    run_worker(trained.root, once=True)
    assert sorted(p.name for p in models.iterdir()) == before


@pytest.mark.parametrize("point", ["export.streaming", "export.before_rename"])
def test_an_export_killed_leaves_no_file_at_its_target(trained_on_both, tmp_path, workspace_state, point):
    trained = trained_on_both
    out = tmp_path / "out" / "pairs.jsonl"
    out.parent.mkdir()
    before = workspace_state(trained)
    result = pairlab("export", trained.root, "--out", out, crash_at=point)
    assert result.returncode == KILLED, result.stderr
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if not p.name.endswith(".tmp")] == []
    assert workspace_state(trained) == before
    assert pairlab("export", trained.root, "--out", out).returncode == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 12


# --------------------------------------------------------------------------- the worker


@pytest.mark.slow
def test_a_worker_killed_mid_training_leaves_no_job_running_after_a_restart(trained_on_both):
    trained = trained_on_both
    set_table(trained.root, "train", LONG_TRAIN)
    job_id = queue(trained, "train", {"actor": "op"})
    worker = start_worker(trained.root)
    try:
        wait_for(lambda: job_state(trained, job_id).progress > 0, what="the training to report an epoch")
    finally:
        worker.kill()  # SIGKILL
        worker.wait(timeout=30)
    assert job_state(trained, job_id).status == "running"
    run_worker(trained.root, once=True)  # the restarted worker
    job = job_state(trained, job_id)
    assert (job.status, job.message) == ("failed", "worker stopped before the job finished")
    set_table(trained.root, "train", FAST_TRAIN)
    assert_last_good_model(trained)


@pytest.mark.slow
@pytest.mark.parametrize("kind, params, point", [
    ("export", {"format": "jsonl", "file": "pairs.jsonl"}, "export.streaming"),
    ("train", {}, "train.before_version"),
    ("encode", {}, "encode.before_register"),
])
def test_a_worker_killed_inside_a_job_is_cleaned_up_by_the_next_worker(trained_on_both, kind, params, point):
    trained = trained_on_both
    def listing():
        return {folder: sorted(p.name for p in (trained.root / folder).glob("*"))
                for folder in ("exports", "models", "features")}

    before = listing()
    job_id = queue(trained, kind, {"actor": "op", **params})
    worker = start_worker(trained.root, crash_at=point)
    try:
        assert worker.wait(timeout=240) == KILLED
    finally:
        if worker.poll() is None:
            worker.kill()
    assert job_state(trained, job_id).status == "running"
    age(trained.root)
    run_worker(trained.root, once=True)  # the restarted worker
    job = job_state(trained, job_id)
    assert (job.status, job.message) == ("failed", "worker stopped before the job finished")
    assert listing() == before  # no staging folder, orphan checkpoint or unnamed feature file is left
    assert_features_consistent(trained)
    assert_last_good_model(trained)
