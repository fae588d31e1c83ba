"""A stand-alone annotator process for the concurrency tests: claims and submits until the queue is empty
(or ``--limit`` submissions, looking ``--pause`` seconds at each pair), then prints what it was handed, what
it submitted, how long each claim took, how many answers the store refused as stale (another tab of the
same person answered that pair first), any error it met and how long it all took, as one JSON line.

Run as ``python -m tests.support.annotator WORKSPACE NAME [--limit N] [--pause S] [--barrier DIR]``. A real
process (not multiprocessing), so it shares nothing with the test runner's state. Several processes may
share one NAME: they are one person's browser tabs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from storage.errors import StaleLeaseError
from storage.queue import claim_next, submit
from storage.store import open_store
from storage.users import get_user
from tests.support.barrier import wait_for_go

MAX_ERRORS = 20  # then give up: the test fails on the first one anyway


def annotate(root: str, name: str, *, limit: int | None = None, pause: float = 0.0,
             barrier: Path | None = None) -> dict:
    """pause: seconds spent looking at each pair between claiming and submitting it."""
    store = open_store(root)
    with store.db.read() as s:
        user_id = get_user(s, name).id
    if barrier is not None:
        wait_for_go(barrier)
    began = time.perf_counter()
    handed, submitted, claim_seconds, errors, refused = [], [], [], [], 0
    while (limit is None or len(submitted) < limit) and len(errors) < MAX_ERRORS:
        try:
            started = time.perf_counter()
            with store.db.write() as s:
                claim = claim_next(s, user_id, lease_minutes=60)
            claim_seconds.append(time.perf_counter() - started)
            if claim is None:
                break
            handed.append([claim.queue_item_id, claim.pair_id])
            time.sleep(pause)
            with store.db.write() as s:
                event = submit(s, user_id, claim.queue_item_id, pair_id=claim.pair_id,
                               labels=["cat"] if claim.pair_id % 2 else ["dog"], verdict="match")
            submitted.append(event.id)
        except StaleLeaseError:
            refused += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported: the tests expect none
            errors.append(f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    seconds = time.perf_counter() - began
    store.close()
    return {"name": name, "handed": handed, "submitted": submitted, "claim_seconds": claim_seconds,
            "errors": errors, "refused": refused, "seconds": seconds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("workspace")
    parser.add_argument("name")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--barrier", type=Path)
    args = parser.parse_args()
    report = annotate(args.workspace, args.name, limit=args.limit, pause=args.pause, barrier=args.barrier)
    print(json.dumps(report))
