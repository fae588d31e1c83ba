"""Operations shared by the CLI, the worker and the pages: they open sessions, call the learner, record results."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from storage.errors import PairlabError
from storage.models import Event, Pair, Selection
from storage.queue import SelectedPair, create_round
from storage.store import Store
from storage.users import UserInfo, get_user, require

SELECTABLE_SPLITS = ("pool", "train")
HUMAN_LABEL_KINDS = ("submit", "adjudicate")


@dataclass(frozen=True)
class RoundReport:
    round_number: int
    strategy: str
    selected: int
    queued_slots: int


def selectable_pair_ids(store: Store) -> np.ndarray:
    """Pool/train pairs that no person has annotated and no round has selected: (n,) int64, sorted.

    Labels given at import do not exclude a pair: a person may still be asked to check it, and a
    disagreement with the imported labels sends the pair to review.
    """
    annotated = select(Event.pair_id).where(Event.kind.in_(HUMAN_LABEL_KINDS))
    query = (select(Pair.id)
             .where(Pair.split.in_(SELECTABLE_SPLITS), Pair.id.not_in(select(Selection.pair_id)),
                    Pair.id.not_in(annotated))
             .order_by(Pair.id))
    with store.db.read() as s:
        return np.fromiter(s.scalars(query), dtype=np.int64)


def run_selection(store: Store, *, strategy: str, budget: int, actor: UserInfo, assign: Sequence[str] = (),
                  overlap: int | None = None, seed: int = 0) -> RoundReport:
    """Select ``budget`` pairs with ``strategy``, record the round with each pair's explanation and queue them."""
    require(actor, "operate")
    if budget < 1:
        raise PairlabError("--budget: must be >= 1")
    overlap = overlap or store.workspace.config.annotation.overlap
    pool = selectable_pair_ids(store)
    if len(pool) == 0:
        raise PairlabError("select: no pairs left in the pool that nobody annotated or selected")
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
