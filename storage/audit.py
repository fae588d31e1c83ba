"""Mismatch audits in the store: each run's ranking of every pair, written in batches, read in pages."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from storage.models import AuditRun, AuditScore, Pair

INSERT_BATCH = 5000  # audit rows per INSERT statement


@dataclass(frozen=True)
class AuditedPair:
    """One pair's audit result: rank (1 = most suspicious), score (higher = more likely mismatched)."""

    pair_id: int
    rank: int
    score: float
    breakdown: dict[str, Any]


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


def record_audit(session: Session, *, model_version_id: int | None, params: dict[str, Any],
                 scored: Iterable[AuditedPair], created_by: int | None) -> int:
    """Store one audit run and its ranking (in batches of ``INSERT_BATCH`` rows); returns the run id."""
    run = AuditRun(model_version_id=model_version_id, params=params, created_by=created_by)
    session.add(run)
    session.flush()
    batch: list[dict[str, Any]] = []
    total = 0
    for item in scored:
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


def audit_page(session: Session, run_id: int, *, offset: int = 0, limit: int = 50) -> list[AuditRow]:
    """Ranks offset+1 .. offset+limit of one run, most suspicious first (an index range scan)."""
    query = (select(AuditScore.pair_id, Pair.external_id, AuditScore.rank, AuditScore.score, AuditScore.breakdown,
                    Pair.image_path, Pair.text)
             .join(Pair, Pair.id == AuditScore.pair_id)
             .where(AuditScore.audit_run_id == run_id, AuditScore.rank > offset, AuditScore.rank <= offset + limit)
             .order_by(AuditScore.rank))
    return [AuditRow(*row) for row in session.execute(query)]


def audit_component_values(session: Session, run_id: int, component: str) -> Iterator[tuple[int, float]]:
    """(pair id, raw value of ``component`` in its breakdown) of every pair of one run that has it, by pair
    id, streamed (the primary key's range scan)."""
    query = (select(AuditScore.pair_id, AuditScore.breakdown).where(AuditScore.audit_run_id == run_id)
             .order_by(AuditScore.pair_id).execution_options(yield_per=5000))
    for pair_id, breakdown in session.execute(query):
        value = ((breakdown or {}).get("components") or {}).get(component, {}).get("value")
        if isinstance(value, (int, float)):
            yield pair_id, float(value)
