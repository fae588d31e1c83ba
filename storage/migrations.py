"""Schema steps: ``MIGRATIONS[v]`` turns a database of schema version ``v`` into ``v + 1``.

``storage.db.Database.upgrade_schema`` runs the missing steps in one write transaction when a workspace
opens (DDL is transactional on SQLite and PostgreSQL, so a failed step leaves the database as it was).
Each step takes the transaction's connection. To change the schema: change ``storage.models``, bump
``SCHEMA_VERSION`` and add the step from the previous version here, with a test in
``tests/integration/test_schema.py`` that a database of the previous version opens.
"""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, inspect, text
from sqlalchemy.orm import Session

from storage.models import AuditRun, AuditScore, Job, LoginAttempt, PairState, PairStateLabel, Round, UserSession
from storage.pair_state import rebuild_pair_states


def _jobs_heartbeat_and_cancel(conn: Connection) -> None:
    """1 -> 2: ``jobs.heartbeat_at`` and ``jobs.cancel_requested_at``; ``jobs.status`` widened to 16
    characters for ``cancelled`` (SQLite does not enforce lengths)."""
    for name in ("heartbeat_at", "cancel_requested_at"):
        column_type = Job.__table__.c[name].type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE jobs ADD COLUMN {name} {column_type}"))
    if conn.dialect.name != "sqlite":
        conn.execute(text("ALTER TABLE jobs ALTER COLUMN status TYPE VARCHAR(16)"))


def _sessions_and_round_order(conn: Connection) -> None:
    """2 -> 3: the ``user_sessions`` and ``login_attempts`` tables; ``rounds.priority`` (each round's number,
    so the newest round still comes first) and ``rounds.closed_at`` (NULL: every existing round stays open).
    Idempotent."""
    for table in (UserSession.__table__, LoginAttempt.__table__):
        table.create(conn, checkfirst=True)
    present = {column["name"] for column in inspect(conn).get_columns("rounds")}
    if "priority" not in present:
        conn.execute(text("ALTER TABLE rounds ADD COLUMN priority INTEGER NOT NULL DEFAULT 0"))
        conn.execute(text("UPDATE rounds SET priority = number"))
    if "closed_at" not in present:
        kind = Round.__table__.c.closed_at.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE rounds ADD COLUMN closed_at {kind}"))


def _pair_states(conn: Connection) -> None:
    """3 -> 4: the materialised per-pair state (``pair_states``, ``pair_state_labels``), filled from the
    event log (``storage.pair_state.rebuild_pair_states``). Idempotent."""
    for table in (PairState.__table__, PairStateLabel.__table__):
        table.create(conn, checkfirst=True)
    with Session(bind=conn) as session:  # joins the upgrade's transaction; commits nothing itself
        rebuild_pair_states(session)
        session.flush()


def _audit_runs(conn: Connection) -> None:
    """4 -> 5: the mismatch audits (``audit_runs``, ``audit_scores``; ``storage.audit``). Idempotent."""
    for table in (AuditRun.__table__, AuditScore.__table__):
        table.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _jobs_heartbeat_and_cancel,
    2: _sessions_and_round_order,
    3: _pair_states,
    4: _audit_runs,
}
