"""The materialised per-pair state (``storage.pair_state``) always equals the state derived from the log.

A seeded random sequence of imports, rounds, queue submits/skips/flags, direct submits, undos and
adjudications runs on a real SQLite file and a real PostgreSQL server; after each step the table, its
label rows, the review queue and the agreement votes are compared with a replay of the event log, and
``rebuild-state`` reproduces the table. An older (schema 3) workspace gets the table when opened.
"""
from __future__ import annotations

import json
import random
import threading
import time

import pytest
from sqlalchemy import delete, select, text

from app.cli import main
from storage.annotations import current_labels, latest_submits, pair_events, record_event
from storage.importers import import_source
from storage.models import SCHEMA_VERSION, Meta, Pair, PairState, PairStateLabel, Selection
from storage.pair_state import pair_states, rebuild_pair_states
from storage.queue import SelectedPair, claim_next, create_round, submit, undo_last
from storage.read_models import agreement_summary, browse_pairs, label_distribution, review_queue
from storage.store import init_workspace, open_store
from storage.users import add_user

LABELS = ["cat", "dog", "bird"]
LEASE = 60.0


def _derived(session) -> tuple[dict, set, dict]:
    """Replaying the log: pair id -> CurrentLabel, {(pair id, label)}, pair id -> sorted agreement votes."""
    labels = {c.pair_id: c for c in current_labels(session)}
    rows = {(pid, name) for pid, c in labels.items() for name in c.labels or ()}
    votes = {pid: sorted((sorted(e.labels or ()), e.verdict or "") for e in latest_submits(events).values())
             for pid, events, _ in pair_events(session)}
    return labels, rows, votes


def _materialised(session) -> tuple[dict, set, dict]:
    ids = list(session.scalars(select(PairState.pair_id)))
    rows = {tuple(r) for r in session.execute(select(PairStateLabel.pair_id, PairStateLabel.label))}
    votes = {pid: sorted((sorted(labels), verdict or "") for labels, verdict in unit)
             for pid, unit in session.execute(select(PairState.pair_id, PairState.submit_votes))}
    return pair_states(session, ids), rows, votes


def _assert_agrees(store) -> None:
    with store.db.read() as s:
        derived, materialised = _derived(s), _materialised(s)
        assert materialised == derived
        assert [i.pair_id for i in review_queue(s, limit=10_000)] == \
            sorted(pid for pid, c in derived[0].items() if c.needs_review)
        assert agreement_summary(s).pairs == sum(len(v) >= 2 for v in derived[2].values())
        counts = label_distribution(s)
        assert counts == {name: sum(name in (c.labels or ()) for c in derived[0].values()) for name in LABELS}


def _import(store, folder, make_image, rng, step) -> None:
    rows = []
    for i in range(rng.randint(1, 3)):
        image = make_image(folder / "images" / f"{step}-{i}.png", color=(rng.randrange(256), 10 * i, 90))
        row = {"id": f"imp{step}-{i}", "image": str(image.relative_to(folder)), "text": f"import {step} {i}"}
        if rng.random() < 0.6:
            row["labels"] = rng.sample(LABELS, rng.randint(0, 2))
        rows.append(row)
    manifest = folder / f"import{step}.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_source(store, manifest, "manifest")


def _random_step(store, users, folder, make_image, rng, step) -> None:
    annotators = [users[n] for n in ("ann", "bob", "cy")]
    action = rng.choice(["import", "round", "queue", "queue", "queue", "direct", "undo", "undo", "adjudicate"])
    if action == "import":
        _import(store, folder, make_image, rng, step)
        return
    with store.db.write() as s:
        pair_ids = list(s.scalars(select(Pair.id)))
        labels = rng.sample(LABELS, rng.randint(0, 2))
        verdict = rng.choice([None, "match", "mismatch", "unsure"])
        if action == "round":
            taken = set(s.scalars(select(Selection.pair_id)))
            free = [p for p in pair_ids if p not in taken]
            if free:
                chosen = rng.sample(free, min(len(free), rng.randint(1, 3)))
                create_round(s, strategy="random", selected=[SelectedPair(p, 0.5) for p in chosen], params={},
                             overlap=rng.randint(1, 3))
        elif action == "queue":
            user = rng.choice(annotators)
            claim = claim_next(s, user, lease_minutes=LEASE)
            if claim is not None:
                submit(s, user, claim.queue_item_id, kind=rng.choice(["submit", "submit", "skip", "flag"]),
                       labels=labels, verdict=verdict, comment=rng.choice([None, f"note {step}"]))
        elif action == "direct":
            record_event(s, pair_id=rng.choice(pair_ids), user_id=rng.choice(annotators), kind="submit",
                         labels=labels, verdict=verdict)
        elif action == "undo":
            undo_last(s, rng.choice(annotators + [users["rev"]]), lease_minutes=LEASE)
        else:
            record_event(s, pair_id=rng.choice(pair_ids), user_id=users["rev"], kind="adjudicate", labels=labels,
                         verdict=verdict)


@pytest.mark.parametrize("seed", [0, 1])
def test_materialised_state_equals_the_event_log_after_random_actions(tmp_path, database_url, make_image, seed):
    rng = random.Random(seed)
    store = init_workspace(tmp_path / "ws", labels=LABELS, database_url=database_url)
    try:
        with store.db.write() as s:
            users = {name: add_user(s, name, role).id for name, role in
                     (("ann", "annotator"), ("bob", "annotator"), ("cy", "annotator"), ("rev", "reviewer"))}
        folder = tmp_path / "data"
        for step in range(3):
            _import(store, folder, make_image, rng, step)
        for step in range(3, 80):
            _random_step(store, users, folder, make_image, rng, step)
            if step % 8 == 0:
                _assert_agrees(store)
        _assert_agrees(store)
        with store.db.read() as s:
            before = _materialised(s)
            assert len(before[0]) > 5 and any(c.status == "conflict" for c in before[0].values())
            assert any(c.status == "adjudicated" for c in before[0].values())
        assert main(["rebuild-state", str(store.root)]) == 0
        with store.db.read() as s:
            assert _materialised(s) == before
    finally:
        store.close()


def test_a_schema_3_workspace_gets_the_state_when_opened(tmp_path, make_workspace):
    store = make_workspace(labels=["cat", "dog"])
    with store.db.write() as s:
        ann = add_user(s, "ann", "annotator").id
        pairs = [Pair(external_id=f"p{i}", image_path=f"/i/{i}.png", image_sha256=str(i) * 64, text=f"t{i}")
                 for i in range(3)]
        s.add_all(pairs)
        s.flush()
        record_event(s, pair_id=pairs[0].id, user_id=ann, kind="submit", labels=["dog"])
        record_event(s, pair_id=pairs[1].id, user_id=ann, kind="flag")
    with store.db.write() as s:  # what a workspace written before the table existed looks like
        s.execute(text("DROP TABLE pair_state_labels"))
        s.execute(text("DROP TABLE pair_states"))
        s.get(Meta, "schema_version").value = "3"
    store.close()
    reopened = open_store(store.root)
    try:
        with reopened.db.read() as s:
            assert s.get(Meta, "schema_version").value == str(SCHEMA_VERSION)
            assert _materialised(s) == _derived(s)
            rows, total = browse_pairs(s, labels=["dog"])
        assert total == 1 and rows[0].external_id == "p0" and rows[0].status == "labelled"
    finally:
        reopened.close()


def test_rebuild_restores_a_damaged_state(make_workspace):
    store = make_workspace(labels=["cat"])
    with store.db.write() as s:
        ann = add_user(s, "ann", "annotator").id
        pair = Pair(external_id="p", image_path="/i/p.png", image_sha256="a" * 64, text="t")
        s.add(pair)
        s.flush()
        record_event(s, pair_id=pair.id, user_id=ann, kind="submit", labels=["cat"])
        s.execute(delete(PairStateLabel))
        s.execute(delete(PairState))
    with store.db.write() as s:
        assert rebuild_pair_states(s) == 1
    with store.db.read() as s:
        assert _materialised(s) == _derived(s) and browse_pairs(s, labels=["cat"])[1] == 1


def test_two_transactions_adding_events_to_one_pair_leave_the_state_of_both(tmp_path, database_url):
    """The second transaction waits for the first (PostgreSQL: on the pair's row lock) and then derives
    the state from both events, instead of failing on the state's key or keeping a stale state."""
    store = init_workspace(tmp_path / "ws", labels=["cat", "dog"], database_url=database_url)
    try:
        with store.db.write() as s:
            ann, bob = add_user(s, "ann", "annotator").id, add_user(s, "bob", "annotator").id
            pair = Pair(external_id="p", image_path="/i/p.png", image_sha256="a" * 64, text="t")
            s.add(pair)
            s.flush()
            pid = pair.id
        errors = []

        def second():
            try:
                with store.db.write() as s:
                    record_event(s, pair_id=pid, user_id=bob, kind="submit", labels=["dog"])
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        worker = threading.Thread(target=second)
        with store.db.write() as s:
            record_event(s, pair_id=pid, user_id=ann, kind="submit", labels=["cat"])
            worker.start()
            time.sleep(0.5)  # the second transaction has added its event and waits for this one
        worker.join(timeout=60)
        assert errors == []
        with store.db.read() as s:
            assert _materialised(s) == _derived(s)
            state = pair_states(s, [pid])[pid]
        assert state.status == "conflict" and set(state.annotators) == {"ann", "bob"}
    finally:
        store.close()
