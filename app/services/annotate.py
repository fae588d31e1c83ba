"""Annotation and review actions of the workbench: each opens its own short transaction and checks the role itself."""
from __future__ import annotations

from collections.abc import Sequence

from app.services.settings import settings
from storage.annotations import record_event
from storage.queue import Claim, claim_next, submit, undo_last
from storage.store import Store
from storage.users import UserInfo, require


def claim(store: Store, user: UserInfo) -> Claim | None:
    """The pair this user holds a lease on, or a newly leased one; None when their queue is empty."""
    require(user, "annotate")
    with store.db.write() as s:
        return claim_next(s, user.id, lease_minutes=settings(store).annotation.lease_minutes)


def annotate(store: Store, user: UserInfo, queue_item_id: int, *, kind: str, labels: Sequence[str] | None = None,
             verdict: str | None = None, comment: str | None = None) -> int:
    """Record a submit, skip or flag for a claimed slot; return the event id."""
    require(user, "annotate")
    with store.db.write() as s:
        return submit(s, user.id, queue_item_id, kind=kind, labels=labels, verdict=verdict,
                      comment=(comment or "").strip() or None).id


def undo(store: Store, user: UserInfo) -> tuple[str, int] | None:
    """Retract the user's latest submission; return (its kind, pair id), or None when there is nothing to undo."""
    require(user, "annotate")
    with store.db.write() as s:
        undone = undo_last(s, user.id, lease_minutes=settings(store).annotation.lease_minutes)
    return None if undone is None else (undone.kind, undone.pair_id)


def adjudicate(store: Store, user: UserInfo, pair_id: int, *, labels: Sequence[str], verdict: str | None,
               comment: str | None = None) -> int:
    """A reviewer's final word on a pair (an ``adjudicate`` event); return the event id."""
    require(user, "review")
    with store.db.write() as s:
        return record_event(s, pair_id=pair_id, user_id=user.id, kind="adjudicate", labels=list(labels),
                            verdict=verdict, comment=(comment or "").strip() or None).id
