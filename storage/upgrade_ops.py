"""The schema step for sign-in sessions and round order, for the lead to register as the next migration.

``add_sessions_and_round_order(conn)`` brings a database made before them up to date: it creates
``user_sessions`` and ``login_attempts``, adds ``rounds.priority`` (set to each round's number, so the
newest round still comes first) and ``rounds.closed_at`` (NULL: every existing round stays open). It is
idempotent, and runs inside the caller's transaction (DDL is transactional on SQLite and PostgreSQL).
"""
from __future__ import annotations

from sqlalchemy import Connection, inspect, text

from storage.models import LoginAttempt, Round, UserSession


def add_sessions_and_round_order(conn: Connection) -> None:
    for table in (UserSession.__table__, LoginAttempt.__table__):
        table.create(conn, checkfirst=True)
    present = {column["name"] for column in inspect(conn).get_columns("rounds")}
    if "priority" not in present:
        conn.execute(text("ALTER TABLE rounds ADD COLUMN priority INTEGER NOT NULL DEFAULT 0"))
        conn.execute(text("UPDATE rounds SET priority = number"))
    if "closed_at" not in present:
        kind = Round.__table__.c.closed_at.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE rounds ADD COLUMN closed_at {kind}"))
