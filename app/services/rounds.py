"""Ordering and closing rounds (operators only; the queue rules are in ``storage.queue``)."""
from __future__ import annotations

from storage.queue import close_round as _close_round
from storage.queue import set_round_priority
from storage.store import Store
from storage.users import UserInfo, require


def set_priority(store: Store, actor: UserInfo, number: int, priority: int) -> None:
    """Claims take the open round with the highest priority first (a new round's is its number)."""
    require(actor, "operate")
    with store.db.write() as s:
        set_round_priority(s, number, priority)


def close_round(store: Store, actor: UserInfo, number: int) -> int:
    """Close round ``number``; returns how many leases it released."""
    require(actor, "operate")
    with store.db.write() as s:
        return _close_round(s, number)
