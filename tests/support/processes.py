"""Running the support processes (``tests.support.annotator``, ``tests.support.load``) side by side against
one workspace: the concurrency tests and ``benchmarks/bench_concurrency.py`` use these."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from sqlalchemy import select

from storage.models import Pair
from storage.queue import SelectedPair, create_round
from storage.store import init_workspace
from storage.users import add_user
from tests.support.barrier import release, stop

REPO = Path(__file__).resolve().parents[2]


def seed(root: Path, database_url: str | None, names: list[str], *, pairs: int, overlap: int) -> None:
    """A workspace with these annotators (distinct names) and one round queuing ``pairs`` pairs ``overlap`` times."""
    store = init_workspace(root, labels=["cat", "dog"], database_url=database_url)
    with store.db.write() as s:
        for name in names:
            add_user(s, name, "annotator")
        for i in range(pairs):
            s.add(Pair(external_id=f"p{i}", image_path=f"/img/{i}.jpg", image_sha256="0" * 64, text=f"text {i}"))
        s.flush()
        ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))
        create_round(s, strategy="random", selected=[SelectedPair(i, 0.0) for i in ids], params={}, overlap=overlap)
    store.close()


def annotate_together(root: Path, barrier: Path, names: list[str], *, limit: int | None = None, pause: float = 0.0,
                      load_modes: tuple[str, ...] = ()) -> tuple[list[dict], list[dict]]:
    """One annotator process per entry of ``names`` (and one ``tests.support.load`` process per mode), started
    at once; returns the annotators' reports and, once they are done and the load is stopped, the load's.

    limit: submissions per annotator (None: until the queue is empty). pause: seconds each one looks at a
    pair between claiming and submitting it (0: back to back).
    """
    barrier.mkdir()
    options = ["--pause", str(pause)] + ([] if limit is None else ["--limit", str(limit)])
    procs = [start("tests.support.load", root, mode, barrier) for mode in load_modes]
    procs += [start("tests.support.annotator", root, name, "--barrier", barrier, *options) for name in names]
    try:
        release(barrier, len(procs))
        annotators = [report(proc) for proc in procs[len(load_modes):]]
        stop(barrier)
        return annotators, [report(proc) for proc in procs[:len(load_modes)]]
    finally:
        stop(barrier)
        kill_left_over(procs)


def claim_latency(annotators: list[dict]) -> str:
    """One line: submissions per second and the claims' latency percentiles over the annotators' reports."""
    claims = np.array([t for r in annotators for t in r["claim_seconds"]]) * 1000
    submitted = sum(len(r["submitted"]) for r in annotators)
    seconds = max(r["seconds"] for r in annotators)
    return (f"{len(annotators)} annotators, {submitted} submissions in {seconds:.1f} s ({submitted / seconds:.0f}/s); "
            f"claim latency p50 {np.percentile(claims, 50):.1f} ms, p95 {np.percentile(claims, 95):.1f} ms, "
            f"max {claims.max():.1f} ms")


def start(module: str, *args) -> subprocess.Popen:
    """``python -m module args...`` from the checkout, its stdout piped."""
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)


def report(proc: subprocess.Popen, *, timeout: float = 300.0) -> dict:
    """The one JSON line the process prints; it must exit with 0."""
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(proc.args)} exited with {proc.returncode}")
    return json.loads(out)


def kill_left_over(procs: list[subprocess.Popen]) -> None:
    """After a failure: end the processes that still run, so none outlives the test."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
