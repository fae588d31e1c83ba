"""The materialised per-pair state: ``pair_states`` and ``pair_state_labels`` (``storage.models``).

Each pair that has events has one row holding what ``storage.annotations.derive_label`` derives from
its events (labels, status, verdict, flag, annotators, agreement, comments, last event and round) plus
the agreement votes (labels None: a verdict-only answer). ``refresh_pair_states`` recomputes the rows of
some pairs from their events and runs in the transaction that adds those events (``record_event``, the
importer), so the table always equals the log; ``rebuild_pair_states`` recomputes every row (``pairlab
rebuild-state``). Readers (``pair_states``, the read models, ``label_matrix``, the exporters) filter, count
and page it in SQL.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from storage.annotations import CurrentLabel, derive_label, latest_submits, pair_events
from storage.models import Event, Pair, PairState, PairStateLabel

CHUNK = 500  # pair ids per statement (well below SQLite's bound-parameter limit)


def _chunks(ids: Sequence[int], size: int = CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _row(label: CurrentLabel, votes: list[list]) -> dict:
    return {"pair_id": label.pair_id, "status": label.status,
            "labels": None if label.labels is None else list(label.labels), "verdict": label.verdict,
            "annotators": list(label.annotators), "annotator_count": len(label.annotators),
            "agreement": label.agreement, "flagged": label.flagged, "needs_review": label.needs_review,
            "comments": list(label.comments), "last_event_at": label.last_event_at,
            "last_round_id": label.last_round_id, "submit_votes": votes, "submitters": len(votes)}


def _write(session: Session, pair_ids: list[int]) -> int:
    """Replace the rows of ``pair_ids`` with the state derived from their events; how many rows were written.

    The pairs' rows are locked first (PostgreSQL: ``FOR NO KEY UPDATE``, in id order; SQLite's writer is
    alone anyway), so two transactions adding events to one pair refresh its state one after the other,
    the second reading the first's committed event, and neither overwrites the other with a stale state.
    """
    session.execute(select(Pair.id).where(Pair.id.in_(pair_ids)).order_by(Pair.id).with_for_update(key_share=True))
    session.execute(delete(PairStateLabel).where(PairStateLabel.pair_id.in_(pair_ids)))
    session.execute(delete(PairState).where(PairState.pair_id.in_(pair_ids)))
    rows, labels = [], []
    for pid, events, comments in pair_events(session, pair_ids):
        label = derive_label(pid, events, comments)
        votes = [[None if e.labels is None else list(e.labels), e.verdict] for e in latest_submits(events).values()]
        rows.append(_row(label, votes))
        labels += [{"pair_id": pid, "label": name} for name in label.labels or ()]
    if rows:
        session.execute(insert(PairState), rows)
    if labels:
        session.execute(insert(PairStateLabel), labels)
    return len(rows)


def refresh_pair_states(session: Session, pair_ids: Iterable[int]) -> None:
    """Recompute the state rows of ``pair_ids`` from their events, in the caller's transaction."""
    ids = sorted({int(p) for p in pair_ids})
    for chunk in _chunks(ids):
        _write(session, chunk)
    session.flush()


def rebuild_pair_states(session: Session) -> int:
    """Drop every state row and recompute all of them from the event log; the number of pairs with events."""
    session.execute(delete(PairStateLabel))
    session.execute(delete(PairState))
    ids = list(session.scalars(select(Event.pair_id).distinct().order_by(Event.pair_id)))
    return sum(_write(session, chunk) for chunk in _chunks(ids))


STATE_COLUMNS = tuple(PairState.__table__.columns)  # read as plain rows: never stale ORM objects


def to_current_label(row) -> CurrentLabel:
    """A ``pair_states`` row (anything with its column attributes) as the ``CurrentLabel`` it materialises."""
    return CurrentLabel(pair_id=row.pair_id, labels=None if row.labels is None else tuple(row.labels),
                        status=row.status, verdict=row.verdict, annotators=tuple(row.annotators),
                        agreement=row.agreement, flagged=row.flagged, comments=tuple(row.comments),
                        last_event_at=row.last_event_at, last_round_id=row.last_round_id)


def pair_states(session: Session, pair_ids: Iterable[int]) -> dict[int, CurrentLabel]:
    """The materialised state of those of ``pair_ids`` that have events."""
    out: dict[int, CurrentLabel] = {}
    for chunk in _chunks(sorted({int(p) for p in pair_ids})):
        for row in session.execute(select(*STATE_COLUMNS).where(PairState.pair_id.in_(chunk))):
            out[row.pair_id] = to_current_label(row)
    return out


def trusted_labels(session: Session, statuses: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """(pair id, label names) of the pairs whose status is one of ``statuses`` and that carry labels, by id."""
    query = (select(PairState.pair_id, PairState.labels)
             .where(PairState.status.in_(list(statuses)), PairState.labels.is_not(None))
             .order_by(PairState.pair_id).execution_options(yield_per=5000))
    for pair_id, labels in session.execute(query):
        yield pair_id, labels



def pairs_with_verdict(session: Session, verdicts: Sequence[str]) -> Iterator[tuple[int, str]]:
    """(pair id, verdict) of the pairs whose current caption-match verdict is one of ``verdicts``, by id, streamed."""
    query = (select(PairState.pair_id, PairState.verdict).where(PairState.verdict.in_(list(verdicts)))
             .order_by(PairState.pair_id).execution_options(yield_per=5000))
    for pair_id, verdict in session.execute(query):
        yield pair_id, verdict
