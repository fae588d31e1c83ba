"""Schema versions (``storage.migrations.MIGRATIONS``): a workspace made by an older pairlab opens and is upgraded
in place, its rows kept; a newer or foreign database is refused with one line. On a SQLite file and on a
throw-away PostgreSQL server."""
from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy import JSON, Column, Float, ForeignKey, Integer, MetaData, Table, create_engine, inspect, select, text

from storage.errors import ConflictError, WorkspaceError
from storage.jobs import get_job, request_cancel
from storage.models import SCHEMA_VERSION, Pair, QueueItem, Round, Selection
from storage.queue import SelectedPair, create_round
from storage.store import init_workspace, open_store
from tests.support.cli import pairlab


def _selections_of_version_5(conn) -> None:
    """``selections`` as versions 1-5 made it (``pair_id`` unique, no ``kind``) and ``queue_items`` over it."""
    old = MetaData()
    for name in ("rounds", "pairs", "users"):
        Table(name, old, autoload_with=conn)
    selections = Table("selections", old, Column("id", Integer, primary_key=True),
                       Column("round_id", ForeignKey("rounds.id"), nullable=False),
                       Column("pair_id", ForeignKey("pairs.id"), nullable=False, unique=True),
                       Column("rank", Integer, nullable=False), Column("score", Float, nullable=False),
                       Column("explanation", JSON, nullable=False))
    queue = QueueItem.__table__.to_metadata(old)
    conn.execute(text("DROP TABLE queue_items"))
    conn.execute(text("DROP TABLE selections"))
    old.create_all(conn, tables=[selections, queue])


def _as_version_1(store) -> None:
    """Turn a new database into what pairlab's schema version 1 made: ``jobs`` without ``heartbeat_at`` and
    ``cancel_requested_at``, ``jobs.status`` of 8 characters, no sessions, pair-state or audit tables,
    ``rounds`` without ``priority``, ``closed_at`` and ``kind``, ``selections.pair_id`` unique; a job left
    running and a queued one, and a round with one queued pair."""
    with store.db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE rounds DROP COLUMN kind"))
        _selections_of_version_5(conn)
        for table in ("audit_scores", "audit_runs", "pair_state_labels", "pair_states"):
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("DROP TABLE user_sessions"))
        conn.execute(text("DROP TABLE login_attempts"))
        conn.execute(text("ALTER TABLE rounds DROP COLUMN priority"))
        conn.execute(text("ALTER TABLE rounds DROP COLUMN closed_at"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN heartbeat_at"))
        conn.execute(text("ALTER TABLE jobs DROP COLUMN cancel_requested_at"))
        if conn.dialect.name != "sqlite":
            conn.execute(text("ALTER TABLE jobs ALTER COLUMN status TYPE VARCHAR(8)"))
        conn.execute(text("UPDATE meta SET value = '1' WHERE key = 'schema_version'"))
        conn.execute(text("INSERT INTO jobs (kind, status, params, progress, message, worker_pid, created_at, "
                          "started_at) VALUES ('train', 'running', '{}', 0.5, 'epoch 3', 4242, "
                          "'2026-01-01 10:00:00', '2026-01-01 10:00:01')"))
        conn.execute(text("INSERT INTO jobs (kind, status, params, progress, message, created_at) VALUES "
                          "('export', 'queued', '{}', 0.0, 'queued', '2026-01-01 10:00:02')"))
        for i in (1, 2):
            conn.execute(text(f"INSERT INTO pairs (external_id, image_path, image_sha256, text, split, created_at) "
                              f"VALUES ('p{i}', '/img/{i}.jpg', '{'0' * 64}', 't{i}', 'pool', '2026-01-01')"))
        conn.execute(text("INSERT INTO rounds (number, strategy, budget, params, created_at) VALUES "
                          "(1, 'random', 1, '{}', '2026-01-01 10:00:03')"))
        conn.execute(text("INSERT INTO selections (round_id, pair_id, rank, score, explanation) SELECT rounds.id, "
                          "pairs.id, 0, 0.5, '{}' FROM rounds, pairs WHERE pairs.external_id = 'p1'"))
        conn.execute(text("INSERT INTO queue_items (selection_id, pair_id, round_id, priority, slot) "
                          "SELECT id, pair_id, round_id, 1000000, 0 FROM selections"))
    store.close()


def _version(store) -> str:
    with store.db.engine.connect() as conn:
        return conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one()


def test_a_version_1_workspace_is_upgraded_when_it_opens(tmp_path, database_url):
    _as_version_1(init_workspace(tmp_path / "ws", database_url=database_url))
    store = open_store(tmp_path / "ws")
    try:
        columns = {c["name"] for c in inspect(store.db.engine).get_columns("jobs")}
        assert {"heartbeat_at", "cancel_requested_at"} <= columns
        assert {"priority", "closed_at"} <= {c["name"] for c in inspect(store.db.engine).get_columns("rounds")}
        assert {"user_sessions", "login_attempts", "pair_states", "pair_state_labels", "audit_runs",
                "audit_scores"} <= set(inspect(store.db.engine).get_table_names())
        assert _version(store) == str(SCHEMA_VERSION)
        with store.db.write() as s:
            job = get_job(s, 1)
            assert (job.kind, job.status, job.message, job.heartbeat_at) == ("train", "running", "epoch 3", None)
            assert request_cancel(s, 1).cancel_requested
            assert request_cancel(s, 2).status == "cancelled"  # 9 characters: the widened column holds it
            assert s.scalar(select(Round.kind)) == "active" and s.scalar(select(Selection.kind)) == "active"
            first, second = s.scalars(select(Pair.id).order_by(Pair.external_id)).all()
            selection = s.scalar(select(Selection.id))
            assert s.execute(select(QueueItem.selection_id, QueueItem.pair_id)).all() == [(selection, first)]
        with pytest.raises(ConflictError):  # upgraded, active learning still selects a pair at most once
            with store.db.write() as s:
                create_round(s, strategy="random", selected=[SelectedPair(second, 1.0), SelectedPair(first, 0.5)],
                             params={})
        for _ in range(2):  # a verification round may take it, and a later one again
            with store.db.write() as s:
                create_round(s, kind="verification", strategy="audit", selected=[SelectedPair(first, 0.9)], params={})
        with pytest.raises(IntegrityError):  # never twice in one round: the database says so, not only Python
            with store.db.write() as s:
                verification = s.scalar(select(Round.id).where(Round.kind == "verification"))
                s.add(Selection(round_id=verification, pair_id=first, kind="verification", rank=1, score=0.1))
                s.flush()
    finally:
        store.close()
    again = open_store(tmp_path / "ws")  # the next open finds the current version and changes nothing
    try:
        assert _version(again) == str(SCHEMA_VERSION)
    finally:
        again.close()
    listed = pairlab("jobs", "list", tmp_path / "ws")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ("2\texport\tcancelled\t0%\tcancelled before it started\n"
                             "1\ttrain\trunning (cancel requested)\t50%\tepoch 3\n")


def test_a_failed_upgrade_changes_nothing(tmp_path, monkeypatch):
    import storage.migrations

    _as_version_1(init_workspace(tmp_path / "ws"))
    last = max(storage.migrations.MIGRATIONS)
    step = storage.migrations.MIGRATIONS[last]

    def broken(conn):   # the last step fails after the earlier ones ran: all of them roll back
        step(conn)
        raise RuntimeError("disk full")

    monkeypatch.setitem(storage.migrations.MIGRATIONS, last, broken)
    with pytest.raises(RuntimeError, match="disk full"):
        open_store(tmp_path / "ws")
    monkeypatch.undo()
    with create_engine(f"sqlite:///{tmp_path / 'ws' / 'pairlab.db'}").connect() as conn:
        assert conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one() == "1"
    store = open_store(tmp_path / "ws")  # rolled back: the real upgrade runs from version 1 again
    try:
        assert _version(store) == str(SCHEMA_VERSION)
    finally:
        store.close()


def test_a_newer_schema_is_refused_with_one_line(tmp_path):
    store = init_workspace(tmp_path / "ws")
    with store.db.engine.begin() as conn:
        conn.execute(text(f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}' WHERE key = 'schema_version'"))
    store.close()
    refusal = f"schema version {SCHEMA_VERSION + 1}, this pairlab needs {SCHEMA_VERSION}"
    with pytest.raises(WorkspaceError, match=refusal + "$"):
        open_store(tmp_path / "ws")
    result = pairlab("jobs", "list", tmp_path / "ws")
    assert result.returncode == 2 and result.stderr.strip().endswith(refusal)
