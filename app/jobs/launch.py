"""Queueing jobs from the workbench's pages: each checks the role and the request before queueing."""
from __future__ import annotations

from collections.abc import Sequence

from app.services.select import check_selection_request
from app.services.settings import settings
from storage.errors import PairlabError
from storage.exporters import EXPORT_FORMATS, EXPORT_SUFFIX
from storage.jobs import JobView, enqueue, enqueue_once, request_cancel
from storage.models import utcnow
from storage.store import Store
from storage.users import UserInfo, require


def launch_selection(store: Store, actor: UserInfo, *, strategy: str, budget: int, assign: Sequence[str] = (),
                     overlap: int | None = None, seed: int = 0) -> JobView:
    """Queue a selection round as a job."""
    require(actor, "operate")
    check_selection_request(strategy, budget, overlap, assign)
    settings(store)  # a bad [selection.<strategy>] table fails here, before queueing
    params = {"actor": actor.name, "strategy": strategy, "budget": int(budget), "assign": list(assign),
              "overlap": overlap, "seed": int(seed)}
    with store.db.write() as s:
        return enqueue(s, "select", params, created_by=actor.id)


def launch_training(store: Store, actor: UserInfo, *, warm_start: bool | None = None) -> JobView:
    """Queue a training job; params ``{"actor": name, "warm_start": bool or None (the workspace's default)}``.
    While the same request is still queued, that job is returned instead of a second one."""
    require(actor, "operate")
    settings(store)  # a bad [train] table fails here, before queueing
    with store.db.write() as s:
        return enqueue_once(s, "train", {"actor": actor.name, "warm_start": warm_start}, created_by=actor.id)


def launch_encode(store: Store, actor: UserInfo) -> JobView:
    """Queue encoding of every pair with the workspace's encoders; params ``{"actor": name}``; a
    request still queued is returned instead of a second one."""
    require(actor, "operate")
    with store.db.write() as s:
        return enqueue_once(s, "encode", {"actor": actor.name}, created_by=actor.id)


def launch_audit(store: Store, actor: UserInfo) -> JobView:
    """Queue a mismatch audit of every pair with the current model; params ``{"actor": name}``; a request
    still queued is returned instead of a second one."""
    require(actor, "operate")
    settings(store)  # a bad [audit] table fails here, before queueing
    with store.db.write() as s:
        return enqueue_once(s, "audit", {"actor": actor.name}, created_by=actor.id)


def launch_export(store: Store, actor: UserInfo, *, fmt: str) -> JobView:
    """Queue an export to ``WS/exports/pairlab-<UTC time>.<ext>``."""
    require(actor, "operate")
    if fmt not in EXPORT_FORMATS:
        raise PairlabError(f"format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    name = f"pairlab-{utcnow():%Y%m%d-%H%M%S-%f}{EXPORT_SUFFIX[fmt]}"
    with store.db.write() as s:
        return enqueue(s, "export", {"actor": actor.name, "format": fmt, "file": name}, created_by=actor.id)


def cancel_job(store: Store, actor: UserInfo, job_id: int) -> JobView:
    """Cancel a queued job now, or ask its worker to stop a running one (``storage.jobs.request_cancel``)."""
    require(actor, "operate")
    with store.db.write() as s:
        return request_cancel(s, job_id)
