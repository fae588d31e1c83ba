"""Mismatch audits in the store: each run's ranking of every pair, written in batches, read in pages, and the
pairs of a run that are due for verification (``verification_candidates``).

A pair's breakdown is stored compact: ``{"values": [...], "ranks": [...], ...}``, one entry per component
in the order of the run's ``params["components"]``, whose weights are the run's ``params["weights"]``
(names and weights belong to the run, not to each of its million rows). Readers get the full form
``{"components": {name: {"value", "rank", "weight"}}, ...}`` through ``expand_breakdown``, which passes
rows written before the compact form through as they are."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from storage.errors import NotFoundError
from storage.models import VERDICTS, AuditRun, AuditScore, Event, Pair, PairState, QueueItem, Round, User

CHUNK = 500  # pair ids per statement (well below SQLite's bound-parameter limit)
VERDICT_FILTERS = ("none", *VERDICTS)  # the Clean-up page's filter on a pair's current verdict

INSERT_BATCH = 5000  # audit rows per INSERT statement
VALUES, RANKS = "values", "ranks"  # the compact breakdown's per-component lists


@dataclass(frozen=True)
class AuditedPair:
    """One pair's audit result: rank (1 = most suspicious), score (higher = more likely mismatched)."""

    pair_id: int
    rank: int
    score: float
    breakdown: dict[str, Any]


def expand_breakdown(stored: dict[str, Any] | None, params: dict[str, Any]) -> dict[str, Any]:
    """The full breakdown of a stored one: its ``values`` and ``ranks`` lists named by the run's
    ``params["components"]`` and weighted by ``params["weights"]``, the other keys as stored. A breakdown
    without the lists (written before the compact form, or by hand) comes back as it is."""
    stored = dict(stored or {})
    if VALUES not in stored:
        return stored
    values, ranks = stored.pop(VALUES), stored.pop(RANKS, None) or []
    names, weights = params.get("components") or [], params.get("weights") or {}
    stored["components"] = {name: {"value": value, "rank": ranks[j] if j < len(ranks) else None,
                                   "weight": weights.get(name)}
                            for j, (name, value) in enumerate(zip(names, values))}
    return stored


def _run(session: Session, run_id: int) -> AuditRun:
    """The audit run ``run_id``; raises ``NotFoundError`` for an unknown one."""
    run = session.get(AuditRun, run_id)
    if run is None:
        raise NotFoundError(f"audit {run_id} does not exist")
    return run


@dataclass(frozen=True)
class AuditRunInfo:
    id: int
    model_version_id: int | None
    params: dict[str, Any]
    pairs: int
    created_at: datetime


@dataclass(frozen=True)
class AuditRow:
    """A ranked pair with what a reviewer needs to judge it."""

    pair_id: int
    external_id: str
    rank: int
    score: float
    breakdown: dict[str, Any]
    image_path: str
    text: str
    verdict: str | None = None  # the pair's current caption verdict (``pair_states``), None before any


def record_audit(session: Session, *, model_version_id: int | None, params: dict[str, Any],
                 scored: Iterable[AuditedPair], created_by: int | None) -> int:
    """Store one audit run and its ranking (in batches of ``INSERT_BATCH`` rows); returns the run id. Compact
    breakdowns (``values``, ``ranks``) need ``params["components"]`` and ``params["weights"]``."""
    run = AuditRun(model_version_id=model_version_id, params=params, created_by=created_by)
    session.add(run)
    session.flush()
    batch: list[dict[str, Any]] = []
    total = 0
    named = bool(params.get("components"))
    for item in scored:
        if not named and VALUES in (item.breakdown or {}):
            raise ValueError("record_audit: compact breakdowns need params['components'] to name their values")
        batch.append({"audit_run_id": run.id, "pair_id": item.pair_id, "rank": item.rank, "score": item.score,
                      "breakdown": item.breakdown})
        if len(batch) == INSERT_BATCH:
            session.execute(insert(AuditScore), batch)
            total += len(batch)
            batch = []
    if batch:
        session.execute(insert(AuditScore), batch)
        total += len(batch)
    run.pairs = total
    return run.id


def latest_audit(session: Session) -> AuditRunInfo | None:
    """The most recent audit run, or None before the first."""
    row = session.scalar(select(AuditRun).order_by(AuditRun.id.desc()).limit(1))
    return None if row is None else AuditRunInfo(row.id, row.model_version_id, dict(row.params or {}), row.pairs,
                                                 row.created_at)


def audit_page(session: Session, run_id: int, *, offset: int = 0, limit: int = 50,
               verdict: str | None = None) -> list[AuditRow]:
    """Up to ``limit`` pairs of one run, most suspicious first, skipping the first ``offset``; with the
    current verdict of each. Unfiltered, ranks offset+1 .. offset+limit (an index range scan); ``verdict``
    (one of ``VERDICT_FILTERS``; ``none``: no verdict yet) keeps only pairs whose current verdict is that,
    walking the rank index until the page is full. Raises ``NotFoundError`` for an unknown run."""
    if verdict is not None and verdict not in VERDICT_FILTERS:
        raise ValueError(f"verdict filter {verdict!r}; allowed: {', '.join(VERDICT_FILTERS)}")
    params = dict(_run(session, run_id).params or {})
    query = (select(AuditScore.pair_id, Pair.external_id, AuditScore.rank, AuditScore.score, AuditScore.breakdown,
                    Pair.image_path, Pair.text, PairState.verdict)
             .join(Pair, Pair.id == AuditScore.pair_id)
             .outerjoin(PairState, PairState.pair_id == AuditScore.pair_id)
             .where(AuditScore.audit_run_id == run_id)
             .order_by(AuditScore.rank))
    if verdict is None:
        query = query.where(AuditScore.rank > offset, AuditScore.rank <= offset + limit)
    else:
        query = query.where(PairState.verdict.is_(None) if verdict == "none" else PairState.verdict == verdict)
        query = query.offset(offset).limit(limit)
    return [AuditRow(pair_id, external_id, rank, score, expand_breakdown(stored, params), *rest)
            for pair_id, external_id, rank, score, stored, *rest in session.execute(query)]


@dataclass(frozen=True)
class VerificationCandidates:
    """What ``verification_candidates`` found: the pairs to queue, in rank order, and how many it left out."""

    chosen: list[AuditedPair]
    in_open_round: int  # an unanswered slot in an open verification round already
    verdict_given: int  # a person gave the caption verdict after the audit ran


def verification_candidates(session: Session, run_id: int, *, top: int | None = None,
                            pair_ids: Iterable[int] | None = None) -> VerificationCandidates:
    """The pairs of audit run ``run_id`` to queue for verification: its ranks 1..``top``, or the given
    ``pair_ids`` (those the run ranked), leaving out pairs that already wait in an open verification round
    and pairs a person (not the import) gave a caption verdict since the run, in an answer not undone.
    Reads O(top) rows. Raises ``NotFoundError`` for an unknown run."""
    run = _run(session, run_id)
    params = dict(run.params or {})
    query = select(AuditScore.pair_id, AuditScore.rank, AuditScore.score, AuditScore.breakdown).where(
        AuditScore.audit_run_id == run_id)
    if top is not None:
        ranked = session.execute(query.where(AuditScore.rank <= top).order_by(AuditScore.rank)).all()
    else:
        wanted = sorted({int(p) for p in pair_ids or ()})
        ranked = sorted((row for chunk in _chunks(wanted)
                         for row in session.execute(query.where(AuditScore.pair_id.in_(chunk)))),
                        key=lambda row: row.rank)
    waiting, judged = set(), set()
    for chunk in _chunks([row.pair_id for row in ranked]):
        waiting |= set(session.scalars(
            select(QueueItem.pair_id).join(Round, Round.id == QueueItem.round_id)
            .where(QueueItem.pair_id.in_(chunk), QueueItem.done_at.is_(None), Round.kind == "verification",
                   Round.closed_at.is_(None))))
        undone = select(Event.undoes_id).where(Event.kind == "undo", Event.pair_id.in_(chunk),
                                               Event.undoes_id.is_not(None))
        judged |= set(session.scalars(
            select(Event.pair_id).join(User, User.id == Event.user_id)
            .where(Event.pair_id.in_(chunk), Event.kind.in_(("submit", "adjudicate")), Event.verdict.is_not(None),
                   Event.created_at >= run.created_at, User.role != "system", Event.id.not_in(undone))))
    chosen = [AuditedPair(row.pair_id, row.rank, row.score, expand_breakdown(row.breakdown, params)) for row in ranked
              if row.pair_id not in waiting and row.pair_id not in judged]
    skipped_open = sum(row.pair_id in waiting for row in ranked)
    return VerificationCandidates(chosen, skipped_open, len(ranked) - len(chosen) - skipped_open)


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def audit_component_values(session: Session, run_id: int, component: str) -> Iterator[tuple[int, float]]:
    """(pair id, raw value of ``component`` in its breakdown) of every pair of one run that has it, by pair
    id, streamed (the primary key's range scan). Raises ``NotFoundError`` for an unknown run."""
    names = (_run(session, run_id).params or {}).get("components") or []
    position = names.index(component) if component in names else None
    query = (select(AuditScore.pair_id, AuditScore.breakdown).where(AuditScore.audit_run_id == run_id)
             .order_by(AuditScore.pair_id).execution_options(yield_per=5000))
    for pair_id, stored in session.execute(query):
        stored = stored or {}
        if VALUES in stored:
            values = stored[VALUES]
            value = values[position] if position is not None and position < len(values) else None
        else:
            value = (stored.get("components") or {}).get(component, {}).get("value")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield pair_id, float(value)
