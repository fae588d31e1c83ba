"""Upgrading an older workspace database to this code's ``SCHEMA_VERSION``, one step at a time.

``MIGRATIONS[v]`` turns schema ``v`` into ``v + 1`` inside the caller's write transaction;
``upgrade_schema`` runs the missing steps in one transaction when a workspace is opened (DDL is
transactional on SQLite and PostgreSQL, so a failed step leaves the database at its old version).
A database newer than the code, or not a pairlab database, is left to ``Database.check_schema``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db import Database
from storage.models import SCHEMA_VERSION, Meta, PairState, PairStateLabel
from storage.pair_state import rebuild_pair_states

log = logging.getLogger(__name__)


def _add_pair_states(session: Session) -> None:
    """1 -> 2: the materialised per-pair state, filled from the event log."""
    for table in (PairState.__table__, PairStateLabel.__table__):
        table.create(session.connection(), checkfirst=True)
    rebuild_pair_states(session)


MIGRATIONS: dict[int, Callable[[Session], None]] = {1: _add_pair_states}


def _version(session: Session) -> int | None:
    value = session.scalar(select(Meta.value).where(Meta.key == "schema_version"))
    return None if value is None else int(value)


def upgrade_schema(db: Database) -> list[int]:
    """Apply the steps from the stored version up to ``SCHEMA_VERSION``; the versions reached (empty if none)."""
    try:
        with db.read() as s:
            stored = _version(s)
    except Exception:  # noqa: BLE001 - not a pairlab database: check_schema names the problem
        return []
    if stored is None or stored >= SCHEMA_VERSION or stored not in MIGRATIONS:
        return []
    reached = []
    with db.write() as s:
        meta = s.scalar(select(Meta).where(Meta.key == "schema_version").with_for_update())
        version = int(meta.value)  # again under the write lock: another process may have upgraded meanwhile
        while version < SCHEMA_VERSION and version in MIGRATIONS:
            MIGRATIONS[version](s)
            version += 1
            reached.append(version)
        meta.value = str(version)
    if reached:
        log.info("%s: upgraded the schema from version %d to %d", db.url, stored, reached[-1])
    return reached
