"""Migration 2 -> 3 (``storage.migrations``): a database made before sessions and round order is brought up
to date, on SQLite and PostgreSQL; the step is idempotent."""
from __future__ import annotations

from sqlalchemy import inspect, select, text

from storage.models import Pair, Round
from storage.queue import SelectedPair, create_round
from storage.store import init_workspace
from storage.migrations import MIGRATIONS


def test_an_older_database_gets_the_tables_and_columns_and_keeps_its_rounds(tmp_path, database_url):
    store = init_workspace(tmp_path / "ws", labels=["cat"], database_url=database_url)
    try:
        with store.db.write() as s:
            for i in range(2):
                s.add(Pair(external_id=f"p{i}", image_path=f"/img/{i}.jpg", image_sha256="0" * 64, text="t"))
            s.flush()
            for pid in s.scalars(select(Pair.id).order_by(Pair.id)):
                create_round(s, strategy="random", params={}, selected=[SelectedPair(pid, 0.0)])
        with store.db.engine.begin() as conn:  # as an older pairlab left it
            conn.execute(text("DROP TABLE user_sessions"))
            conn.execute(text("DROP TABLE login_attempts"))
            conn.execute(text("ALTER TABLE rounds DROP COLUMN priority"))
            conn.execute(text("ALTER TABLE rounds DROP COLUMN closed_at"))
        for _ in range(2):  # idempotent
            with store.db.engine.begin() as conn:
                MIGRATIONS[2](conn)
        tables = set(inspect(store.db.engine).get_table_names())
        assert {"user_sessions", "login_attempts"} <= tables
        with store.db.read() as s:
            assert s.execute(select(Round.number, Round.priority, Round.closed_at).order_by(Round.number)).all() == [
                (1, 1, None), (2, 2, None)]
    finally:
        store.close()
