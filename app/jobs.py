"""Background jobs: what pages may launch and how the worker runs each kind.

``JOB_HANDLERS`` maps a job kind to ``handler(store, params, progress) -> result``. The worker claims a
job, looks its kind up here and records the returned dict as the job's result. To add a kind, write a
handler with that signature and add one line to ``JOB_HANDLERS`` (the kind must be in
``storage.jobs.JOB_KINDS``). Every handler re-checks the acting user's role (``params["actor"]``)
itself, so a job row written by anyone but an operator does nothing.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.services import (
    check_selection_request, encode_workspace, run_selection, selection_strategy, train_config, train_workspace,
    warm_start_default,
)
from learner.selection.strategies import STRATEGY_NAMES
from storage.errors import PairlabError
from storage.exporters import EXPORT_FORMATS, EXPORT_SUFFIX, export_workspace
from storage.jobs import JobView, enqueue
from storage.models import utcnow
from storage.store import Store
from storage.users import UserInfo, get_user, require


class WorkerStopping(Exception):
    """Raised inside a handler's progress call when the worker was asked to stop."""


class JobProgress:
    """What a handler reports progress through; also a ``Progress`` ``(done, total)`` callable.

    Writes are throttled to one short write transaction per ``min_interval`` seconds (the first and the
    final ``done == total`` call always go through). Raises ``WorkerStopping`` once the worker is stopping.
    """

    def __init__(self, report: Callable[[float, str], None], *, stop: threading.Event | None = None,
                 min_interval: float = 0.5):
        self._report = report
        self._stop = stop
        self._min_interval = min_interval
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 0.0
        self.update(fraction, f"{done:,} / {total:,}", force=total > 0 and done >= total)

    def update(self, fraction: float, message: str, *, force: bool = False) -> None:
        if self._stop is not None and self._stop.is_set():
            raise WorkerStopping("the worker was stopped while the job ran")
        now = time.monotonic()
        if force or now - self._last >= self._min_interval:
            self._last = now
            self._report(fraction, message)


Handler = Callable[[Store, dict[str, Any], JobProgress], dict[str, Any]]


def acting_user(store: Store, params: dict[str, Any], action: str) -> UserInfo:
    """The user named in ``params["actor"]``, after checking their role allows ``action``."""
    name = params.get("actor")
    if not isinstance(name, str) or not name:
        raise PairlabError("job params: 'actor' (the acting user's name) is missing")
    with store.db.read() as s:
        actor = get_user(s, name)
    require(actor, action)
    return actor


# --- handlers ----------------------------------------------------------------------------------

def handle_select(store: Store, params: dict[str, Any], progress: JobProgress) -> dict[str, Any]:
    actor = acting_user(store, params, "operate")
    progress.update(0.0, f"selecting {params.get('budget')} pairs with {params.get('strategy')}", force=True)
    report = run_selection(store, strategy=params["strategy"], budget=int(params["budget"]), actor=actor,
                           assign=list(params.get("assign") or ()), overlap=params.get("overlap"),
                           seed=int(params.get("seed", 0)), progress=progress.update)
    return {"round": report.round_number, "strategy": report.strategy, "selected": report.selected,
            "queued_slots": report.queued_slots}


def handle_export(store: Store, params: dict[str, Any], progress: JobProgress) -> dict[str, Any]:
    acting_user(store, params, "operate")
    fmt, name = params.get("format"), params.get("file")
    if fmt not in EXPORT_FORMATS:
        raise PairlabError(f"job params: format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise PairlabError(f"job params: file {name!r} must be a plain file name")
    exports = store.workspace.subdir("exports")
    target = exports / name
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=exports))
    try:  # written in a hidden folder and renamed, so the file appears only when complete
        report = export_workspace(store, fmt, staging / name, progress=progress)
        os.replace(report.path, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"path": str(target), "file": name, "format": fmt, "rows": report.rows}


def handle_encode(store: Store, params: dict[str, Any], progress: JobProgress) -> dict[str, Any]:
    acting_user(store, params, "operate")
    return encode_workspace(store, image_encoder=params.get("image_encoder"), text_encoder=params.get("text_encoder"),
                            progress=progress.update)


def handle_train(store: Store, params: dict[str, Any], progress: JobProgress) -> dict[str, Any]:
    acting_user(store, params, "operate")
    info = train_workspace(store, warm_start=params.get("warm_start"), progress=progress.update)
    return {"version": info.version, "labelled": info.labelled_count, "metrics": info.metrics}


JOB_HANDLERS: dict[str, Handler] = {
    "select": handle_select,
    "export": handle_export,
    "encode": handle_encode,
    "train": handle_train,
}


# --- launching (called by pages; each checks the role itself) -----------------------------------

def launch_selection(store: Store, actor: UserInfo, *, strategy: str, budget: int, assign: Sequence[str] = (),
                     overlap: int | None = None, seed: int = 0) -> JobView:
    """Queue a selection round as a job."""
    require(actor, "operate")
    check_selection_request(strategy, budget, overlap, assign)
    selection_strategy(store, strategy)  # the workspace's options for it, checked before queueing
    params = {"actor": actor.name, "strategy": strategy, "budget": int(budget), "assign": list(assign),
              "overlap": overlap, "seed": int(seed)}
    with store.db.write() as s:
        return enqueue(s, "select", params, created_by=actor.id)


def launch_training(store: Store, actor: UserInfo, *, warm_start: bool | None = None) -> JobView:
    """Queue a training job; params ``{"actor": name, "warm_start": bool or None (the workspace's default)}``.
    The ``[train]`` table of ``pairlab.toml`` is checked before queueing."""
    require(actor, "operate")
    train_config(store)
    warm_start_default(store)
    with store.db.write() as s:
        return enqueue(s, "train", {"actor": actor.name, "warm_start": warm_start}, created_by=actor.id)


def launch_encode(store: Store, actor: UserInfo) -> JobView:
    """Queue encoding of every pair with the workspace's encoders; params ``{"actor": name}``."""
    require(actor, "operate")
    with store.db.write() as s:
        return enqueue(s, "encode", {"actor": actor.name}, created_by=actor.id)


def launch_export(store: Store, actor: UserInfo, *, fmt: str) -> JobView:
    """Queue an export to ``WS/exports/pairlab-<UTC time>.<ext>``."""
    require(actor, "operate")
    if fmt not in EXPORT_FORMATS:
        raise PairlabError(f"format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    name = f"pairlab-{utcnow():%Y%m%d-%H%M%S-%f}{EXPORT_SUFFIX[fmt]}"
    with store.db.write() as s:
        return enqueue(s, "export", {"actor": actor.name, "format": fmt, "file": name}, created_by=actor.id)
