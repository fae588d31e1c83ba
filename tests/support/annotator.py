"""A stand-alone annotator process for the concurrency test: claims and submits until the queue is empty,
then prints what it was handed and what it submitted as one JSON line.

Run as ``python -m tests.support.annotator WORKSPACE NAME``. A real process (not multiprocessing), so it
shares nothing with the test runner's state.
"""
from __future__ import annotations

import json
import sys

from storage.queue import claim_next, submit
from storage.store import open_store
from storage.users import get_user


def annotate_until_empty(root: str, name: str) -> dict:
    store = open_store(root)
    with store.db.read() as s:
        user_id = get_user(s, name).id
    handed, submitted = [], []
    while True:
        with store.db.write() as s:
            claim = claim_next(s, user_id, lease_minutes=60)
            if claim is None:
                break
            handed.append([claim.queue_item_id, claim.pair_id])
        with store.db.write() as s:
            event = submit(s, user_id, claim.queue_item_id, labels=["cat"] if claim.pair_id % 2 else ["dog"],
                           verdict="match")
            submitted.append(event.id)
    store.close()
    return {"name": name, "handed": handed, "submitted": submitted}


if __name__ == "__main__":
    print(json.dumps(annotate_until_empty(sys.argv[1], sys.argv[2])))
