"""Operations shared by the CLI, the worker and the pages: they open sessions, call the learner, record results."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from storage.annotations import current_labels
from storage.errors import PairlabError
from storage.models import Pair, Selection
from storage.queue import SelectedPair, create_round
from storage.store import Store
from storage.users import UserInfo, get_user, require

SELECTABLE_SPLITS = ("pool", "train")


@dataclass(frozen=True)
class RoundReport:
    round_number: int
    strategy: str
    selected: int
    queued_slots: int


def selectable_pair_ids(store: Store) -> np.ndarray:
    """Pairs of the pool/train splits that have no label yet and were never selected: (n,) int64, sorted."""
    with store.db.read() as s:
        candidates = set(s.scalars(select(Pair.id).where(Pair.split.in_(SELECTABLE_SPLITS))))
        candidates -= set(s.scalars(select(Selection.pair_id)))
        candidates -= {c.pair_id for c in current_labels(s) if c.labels is not None}
    return np.array(sorted(candidates), dtype=np.int64)


def run_selection(store: Store, *, strategy: str, budget: int, actor: UserInfo, assign: Sequence[str] = (),
                  overlap: int | None = None, seed: int = 0) -> RoundReport:
    """Select ``budget`` pairs with ``strategy``, record the round with each pair's explanation and queue them."""
    require(actor, "operate")
    if budget < 1:
        raise PairlabError("--budget: must be >= 1")
    overlap = overlap or store.workspace.config.annotation.overlap
    pool = selectable_pair_ids(store)
    if len(pool) == 0:
        raise PairlabError("select: no unlabelled, unselected pairs left in the pool")
    if budget > len(pool):
        raise PairlabError(f"--budget: {budget} exceeds the {len(pool)} selectable pairs")
    if strategy != "random":
        raise PairlabError(f"--strategy {strategy}: only 'random' is built so far (the learner lands later)")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(pool, size=budget, replace=False)
    selected = [SelectedPair(int(pid), 0.0, {"strategy": "random", "rank": rank, "seed": seed})
                for rank, pid in enumerate(chosen)]
    with store.db.write() as s:
        assignees = [get_user(s, name).id for name in assign]
        rnd = create_round(s, strategy=strategy, selected=selected, params={"seed": seed, "budget": budget},
                           overlap=overlap, assignees=assignees, created_by=actor.id)
        number = rnd.number
    return RoundReport(number, strategy, budget, budget * overlap)
