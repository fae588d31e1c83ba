"""Real concurrent processes against one database (a SQLite file, and PostgreSQL where its server is
installed): leases never double-book, no submission is lost."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.models import Event, Pair, QueueItem
from storage.queue import SelectedPair, create_round
from storage.store import init_workspace, open_store
from storage.users import add_user
from tests.support.postgres import database_url as database_url_for

N_PAIRS = 150
OVERLAP = 2
N_WORKERS = 8
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    with database_url_for(request.param) as url:
        yield url


@pytest.mark.slow
def test_eight_processes_share_the_queue_without_double_leases_or_lost_events(tmp_path, database_url):
    root = tmp_path / "ws"
    store = init_workspace(root, labels=["cat", "dog"], database_url=database_url)
    names = [f"annotator{i}" for i in range(N_WORKERS)]
    with store.db.write() as s:
        for name in names:
            add_user(s, name, "annotator", "password123")
        for i in range(N_PAIRS):
            s.add(Pair(external_id=f"p{i}", image_path=f"/img/{i}.jpg", image_sha256="0" * 64, text=f"text {i}"))
        s.flush()
        ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))
        create_round(s, strategy="random", selected=[SelectedPair(i, 0.0) for i in ids], params={}, overlap=OVERLAP)
    store.close()

    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.annotator", str(root), name],
                              cwd=REPO, stdout=subprocess.PIPE, text=True) for name in names]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        report = json.loads(out)
        results.append((report["name"], [tuple(h) for h in report["handed"]], report["submitted"]))

    slot_holders = defaultdict(set)
    pair_holders = defaultdict(list)
    submitted = []
    for name, handed, events in results:
        for item_id, pair_id in handed:
            slot_holders[item_id].add(name)
            pair_holders[pair_id].append(name)
        submitted += events
    # Every slot went to exactly one annotator, every pair to exactly OVERLAP distinct annotators.
    assert len(slot_holders) == N_PAIRS * OVERLAP
    assert all(len(holders) == 1 for holders in slot_holders.values())
    assert all(len(h) == OVERLAP and len(set(h)) == OVERLAP for h in pair_holders.values())
    # Work was really shared, not done by one process.
    per_worker = Counter(name for name, handed, _ in results for _ in handed)
    assert len(per_worker) >= N_WORKERS // 2

    store = open_store(root)
    with store.db.read() as s:
        stored = set(s.scalars(select(Event.id).where(Event.kind == "submit")))
        open_slots = s.scalar(select(func.count(QueueItem.id)).where(QueueItem.done_at.is_(None)))
    assert len(submitted) == len(set(submitted)) == N_PAIRS * OVERLAP
    assert stored == set(submitted)  # 0 lost events
    assert open_slots == 0
