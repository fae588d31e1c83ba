"""Reading pairs for an export: each pair with its current label and its place in the latest audit,
streamed in batches, and the manifest record (DESIGN §2) plus annotation state (comments included) and
audit score that the text and JSON formats share."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from storage.annotations import CurrentLabel
from storage.faults import crash_point
from storage.models import AuditRun, AuditScore, Pair, Round
from storage.pair_state import pair_states
from storage.progress import CountProgress

BATCH = 1000


@dataclass(frozen=True)
class ExportRow:
    """A pair with its derived state (``label`` is None while the pair has no events) and its score and
    rank in the latest audit run (None when that run did not score it, or before the first audit)."""

    pair_id: int
    external_id: str
    image: str
    image_sha256: str
    text: str
    split: str
    label: CurrentLabel | None
    audit_score: float | None = None
    audit_rank: int | None = None

    @property
    def labels(self) -> list[str] | None:
        return None if self.label is None or self.label.labels is None else list(self.label.labels)


class RowCounter:
    """Counts rows and reports ``progress(done, total)``."""

    def __init__(self, session: Session, progress: CountProgress | None):
        self.done, self.progress = 0, progress
        self.total = session.scalar(select(func.count(Pair.id))) if progress else 0

    def tick(self) -> None:
        self.done += 1
        if self.done == 1:
            crash_point("export.streaming")
        if self.progress is not None:
            self.progress(self.done, self.total)


def export_rows(session: Session, *, by_image: bool = False) -> Iterator[ExportRow]:
    """All pairs in id order (or grouped by image sha256), streamed with ``yield_per``; the latest audit
    run's score and rank come in the same query (an outer join on ``audit_scores``' primary key)."""
    order = (Pair.image_sha256, Pair.id) if by_image else (Pair.id,)
    latest_run = select(func.max(AuditRun.id)).scalar_subquery()
    query = (select(Pair.id, Pair.external_id, Pair.image_path, Pair.image_sha256, Pair.text, Pair.split,
                    AuditScore.score, AuditScore.rank)
             .outerjoin(AuditScore, and_(AuditScore.pair_id == Pair.id, AuditScore.audit_run_id == latest_run))
             .order_by(*order).execution_options(yield_per=BATCH))
    for batch in session.execute(query).partitions():
        labels = pair_states(session, [r[0] for r in batch])
        for pid, ext, image, sha, text, split, score, rank in batch:
            yield ExportRow(pid, ext, image, sha, text, split, labels.get(pid), score, rank)


def round_number_by_id(session: Session) -> dict[int, int]:
    """Round id -> round number."""
    return dict(session.execute(select(Round.id, Round.number)).all())


def timestamp(value: datetime | None) -> str | None:
    """A stored (naive UTC) time as ISO 8601 with ``+00:00``."""
    return None if value is None else value.replace(tzinfo=timezone.utc).isoformat()


def manifest_record(row: ExportRow, rounds: dict[int, int]) -> dict:
    """The manifest row of a pair plus its annotation state (DESIGN §2)."""
    state = row.label
    record: dict = {"id": row.external_id, "image": row.image, "text": row.text}
    if row.labels is not None:
        record["labels"] = row.labels
    record.update(
        split=row.split,
        annotators=list(state.annotators) if state else [],
        timestamp=timestamp(state.last_event_at) if state else None,
        round=rounds.get(state.last_round_id) if state and state.last_round_id else None,
        agreement=state.agreement if state else None,
        status=state.status if state else "unlabelled",
        verdict=state.verdict if state else None,
        comments=list(state.comments) if state else [],
        audit_score=row.audit_score,
        audit_rank=row.audit_rank,
    )
    return record
