"""How the worker runs each job kind: ``JOB_HANDLERS[kind](store, params, progress) -> result``.

The worker claims a job, looks its kind up here and records the returned dict as the job's result.
To add a kind, write a handler with that signature and add one line to ``JOB_HANDLERS`` (the kind
must be in ``storage.jobs.JOB_KINDS``). Every handler re-checks the role of the user who queued the
job (``params["actor"]``), so a job row written by anyone but an operator does nothing. The worker adds
the job's id to the params as ``params["job_id"]``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.jobs.progress import JobProgress
from app.services.audit import run_audit
from app.services.encode import encode_workspace
from app.services.select import run_selection
from app.services.train import train_workspace
from storage.errors import PairlabError
from storage.exporters import EXPORT_FORMATS, export_workspace
from storage.store import Store
from storage.users import UserInfo, get_user, require

Handler = Callable[[Store, dict[str, Any], JobProgress], dict[str, Any]]
# An export job writes in exports/.partial-<random>/ and renames the file out when complete; only workers
# make these folders, so one left at a worker's start-up is litter (app.jobs.litter).
STAGING_PREFIX = ".partial-"


def acting_user(store: Store, params: dict[str, Any], action: str) -> UserInfo:
    """The user named in ``params["actor"]``, after checking their role allows ``action``."""
    name = params.get("actor")
    if not isinstance(name, str) or not name:
        raise PairlabError("job params: 'actor' (the acting user's name) is missing")
    with store.db.read() as s:
        actor = get_user(s, name)
    require(actor, action)
    return actor


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
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=exports))
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
    info = train_workspace(store, warm_start=params.get("warm_start"), progress=progress.update,
                           job_id=params.get("job_id"))
    return info.summary()


def handle_audit(store: Store, params: dict[str, Any], progress: JobProgress) -> dict[str, Any]:
    actor = acting_user(store, params, "operate")
    report = run_audit(store, actor=actor, progress=progress.update, show=0)
    return {"audit": report.run_id, "pairs": report.pairs, "model_version": report.model_version}


JOB_HANDLERS: dict[str, Handler] = {
    "select": handle_select,
    "export": handle_export,
    "encode": handle_encode,
    "train": handle_train,
    "audit": handle_audit,
}
