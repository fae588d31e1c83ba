"""Schema steps: ``MIGRATIONS[v]`` turns a database of schema version ``v`` into ``v + 1``.

``storage.db.Database.upgrade_schema`` runs the missing steps in one write transaction when a workspace
opens (DDL is transactional on SQLite and PostgreSQL, so a failed step leaves the database as it was).
Each step takes the transaction's connection. To change the schema: change ``storage.models``, bump
``SCHEMA_VERSION`` and add the step from the previous version here, with a test in
``tests/integration/test_schema.py`` that a database of the previous version opens.
"""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, UniqueConstraint, inspect, text
from sqlalchemy.schema import AddConstraint
from sqlalchemy.orm import Session

from storage.models import (AuditRun, AuditScore, Job, LoginAttempt, PairState, PairStateLabel, QueueItem, Round,
                            Selection, UserSession)
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


def _verification_rounds(conn: Connection) -> None:
    """5 -> 6: ``rounds.kind`` and ``selections.kind`` (``active`` for every existing row); the unique
    ``selections.pair_id`` becomes unique over the ``active`` rows only (a partial index), plus unique
    ``(round_id, pair_id)``, so a verification round may take a pair that was selected before.

    PostgreSQL drops the constraint in place. SQLite cannot drop a constraint, so both tables are rebuilt
    within the upgrade's transaction, without turning foreign keys off (a pragma SQLite ignores inside a
    transaction): the old tables are renamed away (SQLite rewrites ``queue_items``' reference to follow),
    the new ones created and filled, then the old child and the old parent dropped, in that order, so no
    drop ever deletes a row something still references. Idempotent.
    """
    for table in ("rounds", "selections"):
        if "kind" not in {column["name"] for column in inspect(conn).get_columns(table)}:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'active'"))
    unique_pair = [unique["name"] for unique in inspect(conn).get_unique_constraints("selections")
                   if unique["column_names"] == ["pair_id"]]
    if not unique_pair:
        return  # already done
    if conn.dialect.name != "sqlite":
        conn.execute(text(f'ALTER TABLE selections DROP CONSTRAINT "{unique_pair[0]}"'))
        for index in Selection.__table__.indexes:
            index.create(conn)
        for constraint in Selection.__table__.constraints:
            if isinstance(constraint, UniqueConstraint):
                conn.execute(AddConstraint(constraint))
        return
    for index in QueueItem.__table__.indexes:  # index names are global: free them for the new tables
        conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    conn.execute(text("ALTER TABLE queue_items RENAME TO queue_items_v5"))
    conn.execute(text("ALTER TABLE selections RENAME TO selections_v5"))
    Selection.__table__.create(conn)
    QueueItem.__table__.create(conn)
    for table in (Selection.__table__, QueueItem.__table__):
        columns = ", ".join(column.name for column in table.columns)
        conn.execute(text(f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {table.name}_v5"))
    conn.execute(text("DROP TABLE queue_items_v5"))
    conn.execute(text("DROP TABLE selections_v5"))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _jobs_heartbeat_and_cancel,
    2: _sessions_and_round_order,
    3: _pair_states,
    4: _audit_runs,
    5: _verification_rounds,
}
