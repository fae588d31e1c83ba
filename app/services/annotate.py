"""Annotation and review actions of the workbench: each opens its own short transaction and checks the role itself."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from app.services.select import PREMARK_THRESHOLD_KEY, SUGGESTION_PROBABILITIES_KEY, SUGGESTIONS_KEY
from app.services.settings import settings
from storage.annotations import record_event
from storage.model_versions import latest_model_version
from storage.models import utcnow
from storage.queue import Claim, Undone, claim_next, held_claim, renew_lease, submit, undo_last
from storage.store import Store
from storage.users import UserInfo, require

HEARTBEATS_PER_LEASE = 3  # the open Annotate screen renews its lease this many times per lease period


@dataclass(frozen=True)
class Suggestion:
    """A label the model suggests for a pair: its probability (None for rounds selected before
    probabilities were stored) and whether it is pre-marked (see ``suggestions``)."""

    label: str
    probability: float | None
    premarked: bool


def claim(store: Store, user: UserInfo) -> Claim | None:
    """The pair this user holds a lease on, or a newly leased one; None when their queue is empty."""
    require(user, "annotate")
    with store.db.write() as s:
        return claim_next(s, user.id, lease_minutes=settings(store).annotation.lease_minutes)


def held(store: Store, user: UserInfo) -> Claim | None:
    """The pair this user already holds a live lease on (e.g. before a reload), read only; None if none."""
    require(user, "annotate")
    with store.db.read() as s:
        return held_claim(s, user.id)


def heartbeat_seconds(store: Store) -> float:
    """How often an open Annotate screen renews its lease: a third of the lease period."""
    return settings(store).annotation.lease_minutes * 60 / HEARTBEATS_PER_LEASE


def lease_age_seconds(store: Store, current: Claim) -> float:
    """Seconds since the lease of ``current`` was last granted or renewed (from its expiry)."""
    left = (current.lease_expires_at - utcnow()).total_seconds()
    return settings(store).annotation.lease_minutes * 60 - left


def heartbeat(store: Store, user: UserInfo, queue_item_id: int) -> datetime | None:
    """Renew the user's live lease on a slot; the new expiry, or None when the lease is no longer theirs."""
    require(user, "annotate")
    with store.db.write() as s:
        return renew_lease(s, user.id, queue_item_id, lease_minutes=settings(store).annotation.lease_minutes)


def annotate(store: Store, user: UserInfo, queue_item_id: int, *, pair_id: int | None = None, kind: str,
             labels: Sequence[str] | None = None, verdict: str | None = None, comment: str | None = None) -> int:
    """Record a submit, skip or flag for the slot the user holds (``pair_id``: the pair they were shown);
    return the event id. Raises ``StaleLeaseError`` (nothing written) when the lease is no longer theirs."""
    require(user, "annotate")
    with store.db.write() as s:
        return submit(s, user.id, queue_item_id, pair_id=pair_id, kind=kind, labels=labels, verdict=verdict,
                      comment=(comment or "").strip() or None).id


def undo(store: Store, user: UserInfo) -> Undone | None:
    """Retract the user's latest submission (its answer comes back in the result); None when there is nothing to undo."""
    require(user, "annotate")
    with store.db.write() as s:
        return undo_last(s, user.id, lease_minutes=settings(store).annotation.lease_minutes)


def suggestions(store: Store, current: Claim, vocabulary: Sequence[str]) -> list[Suggestion]:
    """The model's suggestions for a claimed pair, likeliest first, restricted to the vocabulary.

    None at all until the latest model's validation mAP reaches ``[annotation] suggest_min_map``; a
    suggestion is pre-marked only when its probability reaches both ``premark_probability`` and the
    threshold calibrated for the scoring model at selection (``PREMARK_THRESHOLD_KEY``); one without a
    stored probability or threshold never is.
    """
    config = settings(store).annotation
    with store.db.read() as s:
        model = latest_model_version(s)
    validation_map = (model.metrics.get("validation") or {}).get("avg") if model is not None else None
    if not isinstance(validation_map, (int, float)) or validation_map < config.suggest_min_map:
        return []
    known = set(vocabulary)
    probabilities = current.explanation.get(SUGGESTION_PROBABILITIES_KEY)
    calibrated = current.explanation.get(PREMARK_THRESHOLD_KEY)
    premark_at = max(config.premark_probability, calibrated) if isinstance(calibrated, (int, float)) else None
    if isinstance(probabilities, dict):
        return [Suggestion(name, float(p), premark_at is not None and float(p) >= premark_at)
                for name, p in probabilities.items() if name in known and isinstance(p, (int, float))]
    names = current.explanation.get(SUGGESTIONS_KEY)
    if not isinstance(names, list):
        return []
    return [Suggestion(name, None, False) for name in dict.fromkeys(names) if isinstance(name, str) and name in known]


def adjudicate(store: Store, user: UserInfo, pair_id: int, *, labels: Sequence[str], verdict: str | None,
               comment: str | None = None) -> int:
    """A reviewer's final word on a pair (an ``adjudicate`` event); return the event id."""
    require(user, "review")
    with store.db.write() as s:
        return record_event(s, pair_id=pair_id, user_id=user.id, kind="adjudicate", labels=list(labels),
                            verdict=verdict, comment=(comment or "").strip() or None).id
