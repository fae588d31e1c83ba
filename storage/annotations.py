"""Append-only annotation events and the current label derived from them.

Rules for the current label of a pair (DESIGN §2):
- undone events are ignored (an ``undo`` event retracts the event it names);
- the latest ``adjudicate`` event, if any, is final;
- otherwise each annotator's latest ``submit`` that carries labels counts once for the labels, and their
  latest verdict once for the caption verdict (a verification answer may give only a verdict: ``labels``
  None, "not judged", leaves the labels as they were); with one annotator that is the label, with
  several a label is in when a strict majority chose it, and a tie on any label or on the caption
  verdict marks the pair for review; a pair with a verdict but no labels stays ``unlabelled``;
- labels given at import count only while no person has submitted the pair: the import (the
  ``system`` user) is never one of the voters, so it never disagrees with a human.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import NotFoundError, PairlabError
from storage.models import EVENT_KINDS, VERDICTS, Event, Pair, User
from storage.text import text_problem
from storage.vocabulary import label_names

LABELLING_KINDS = ("submit", "import")
UNDOABLE_KINDS = ("submit", "skip", "flag", "adjudicate")


@dataclass(frozen=True)
class EventRow:
    """The fields of an event that label derivation needs."""

    id: int
    user: str
    kind: str
    labels: tuple[str, ...] | None
    verdict: str | None
    undoes_id: int | None
    created_at: datetime
    round_id: int | None = None


@dataclass(frozen=True)
class CurrentLabel:
    """The derived state of one pair.

    labels: the consensus label names, or None while nobody has labelled the pair.
    status: ``unlabelled``, ``labelled``, ``conflict`` (tie among annotators) or ``adjudicated``.
    agreement: mean per-label share of annotators who agree with the consensus (None below 2 annotators).
    """

    pair_id: int
    labels: tuple[str, ...] | None
    status: str
    verdict: str | None
    annotators: tuple[str, ...]
    agreement: float | None
    flagged: bool
    comments: tuple[str, ...]
    last_event_at: datetime | None
    last_round_id: int | None

    @property
    def needs_review(self) -> bool:
        if self.status == "adjudicated":
            return False
        return self.status == "conflict" or self.flagged or self.verdict == "mismatch"


def derive_label(pair_id: int, events: Sequence[EventRow], comments: Sequence[str] = ()) -> CurrentLabel:
    """The current label of one pair from its events in id order (pure function)."""
    undone = {e.undoes_id for e in events if e.kind == "undo"}
    live = [e for e in events if e.id not in undone and e.kind != "undo"]
    flagged = any(e.kind == "flag" for e in live)
    last = live[-1] if live else None
    common = dict(pair_id=pair_id, flagged=flagged, comments=tuple(comments),
                  last_event_at=last.created_at if last else None, last_round_id=last.round_id if last else None)
    adjudications = [e for e in live if e.kind == "adjudicate"]
    if adjudications:
        final = adjudications[-1]
        return CurrentLabel(labels=final.labels, status="adjudicated", verdict=final.verdict,
                            annotators=(final.user,), agreement=None, **common)
    label_votes: dict[str, EventRow] = {}  # each voter's latest event carrying labels
    verdict_votes: dict[str, str] = {}  # each person's latest verdict
    for e in live:
        if e.kind in LABELLING_KINDS and e.labels is not None:
            label_votes[e.user] = e
        if e.kind == "submit" and e.verdict is not None:
            verdict_votes[e.user] = e.verdict
    if any(e.kind == "submit" for e in label_votes.values()):  # people have labelled it: the import is no vote
        label_votes = {user: e for user, e in label_votes.items() if e.kind == "submit"}
    if not label_votes and not verdict_votes:
        return CurrentLabel(labels=None, status="unlabelled", verdict=None, annotators=(),
                            agreement=None, **common)
    labels, agreement, label_tie = (_majority([set(v.labels) for v in label_votes.values()]) if label_votes
                                    else (None, None, False))
    verdict, verdict_tie = _majority_verdict(list(verdict_votes.values()))
    status = "conflict" if label_tie or verdict_tie else "labelled" if labels is not None else "unlabelled"
    annotators = tuple(dict.fromkeys([*label_votes, *verdict_votes]))
    return CurrentLabel(labels=labels, status=status, verdict=verdict, annotators=annotators,
                        agreement=agreement, **common)


def _majority(sets: list[set[str]]) -> tuple[tuple[str, ...], float | None, bool]:
    n = len(sets)
    union = sorted(set().union(*sets))
    counts = {name: sum(name in s for s in sets) for name in union}
    chosen = tuple(name for name in union if 2 * counts[name] > n)
    tie = any(2 * c == n for c in counts.values())
    if n < 2:
        return chosen, None, False
    agreement = 1.0 if not union else sum(max(c, n - c) for c in counts.values()) / (n * len(union))
    return chosen, agreement, tie


def _majority_verdict(verdicts: list[str | None]) -> tuple[str | None, bool]:
    given = [v for v in verdicts if v is not None]
    if not given:
        return None, False
    ranked = sorted(((given.count(v), v) for v in set(given)), reverse=True)
    tie = len(ranked) > 1 and ranked[0][0] == ranked[1][0]
    return ranked[0][1], tie


def record_event(session: Session, *, pair_id: int, user_id: int, kind: str, labels: Iterable[str] | None = None,
                 verdict: str | None = None, comment: str | None = None, round_id: int | None = None,
                 undoes_id: int | None = None) -> Event:
    """Append one event after checking kind, verdict, labels against the vocabulary, and the comment
    against the text rule (``storage.text``: no NUL or other control character but tab, newline and
    carriage return; a ``PairlabError`` naming ``comment``, so the page shows it and keeps the text), and
    refresh the pair's materialised state (``storage.pair_state``) in the same transaction."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"event kind {kind!r}; allowed: {', '.join(EVENT_KINDS)}")
    if verdict is not None and verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r}; allowed: {', '.join(VERDICTS)}")
    if comment is not None:
        problem = text_problem(comment) if isinstance(comment, str) else f"expected text, got {type(comment).__name__}"
        if problem is not None:
            raise PairlabError(f"comment: {problem}")
    if session.get(Pair, pair_id) is None:
        raise NotFoundError(f"pair {pair_id} does not exist")
    clean = None
    if labels is not None:
        vocabulary = set(label_names(session))
        clean = sorted(set(labels))
        unknown = [name for name in clean if name not in vocabulary]
        if unknown:
            raise PairlabError(f"labels: unknown label {unknown[0]!r} (not in the workspace vocabulary)")
    event = Event(pair_id=pair_id, user_id=user_id, kind=kind, labels=clean, verdict=verdict,
                  comment=comment or None, round_id=round_id, undoes_id=undoes_id)
    session.add(event)
    session.flush()
    from storage.pair_state import refresh_pair_states  # that module derives from this one's events

    refresh_pair_states(session, [pair_id])  # the materialised state changes in the event's transaction
    return event


def last_undoable_event(session: Session, user_id: int) -> Event | None:
    """The user's latest submit/skip/flag/adjudicate event that is not undone yet."""
    undone = select(Event.undoes_id).where(Event.kind == "undo", Event.undoes_id.is_not(None))
    return session.scalar(
        select(Event)
        .where(Event.user_id == user_id, Event.kind.in_(UNDOABLE_KINDS), Event.id.not_in(undone))
        .order_by(Event.id.desc())
        .limit(1)
    )


def _rows(session: Session, pair_ids: Iterable[int] | None) -> Iterator[tuple[int, EventRow, str | None]]:
    query = (select(Event.pair_id, Event.id, User.name, Event.kind, Event.labels, Event.verdict, Event.undoes_id,
                    Event.created_at, Event.round_id, Event.comment)
             .join(User, User.id == Event.user_id)
             .order_by(Event.pair_id, Event.id))
    if pair_ids is not None:
        query = query.where(Event.pair_id.in_(list(pair_ids)))
    for pid, eid, user, kind, labels, verdict, undoes, created, round_id, comment in \
            session.execute(query.execution_options(yield_per=2000)):
        row = EventRow(eid, user, kind, None if labels is None else tuple(labels), verdict, undoes, created, round_id)
        yield pid, row, comment


def pair_events(session: Session, pair_ids: Iterable[int] | None = None) -> Iterator[tuple[int, list[EventRow], list[str]]]:
    """Each pair that has events, in pair-id order: its events in id order and its live comments."""
    for pid, group in groupby(_rows(session, pair_ids), key=lambda r: r[0]):
        rows = list(group)
        undone = {r[1].undoes_id for r in rows if r[1].kind == "undo"}
        yield pid, [r[1] for r in rows], [c for _, e, c in rows if c and e.id not in undone]


def current_labels(session: Session, pair_ids: Iterable[int] | None = None) -> Iterator[CurrentLabel]:
    """Stream the labels derived from the event log of the pairs that have events, in pair-id order.

    This replays the log; the pages and exporters read the materialised copy (``storage.pair_state``).
    """
    for pid, events, comments in pair_events(session, pair_ids):
        yield derive_label(pid, events, comments)


def latest_submits(events: Sequence[EventRow]) -> dict[str, EventRow]:
    """Each annotator's latest live ``submit`` (imports and adjudications left out): the agreement votes."""
    undone = {e.undoes_id for e in events if e.kind == "undo"}
    return {e.user: e for e in events if e.kind == "submit" and e.id not in undone}


def current_label(session: Session, pair_id: int) -> CurrentLabel:
    """The label of one pair, derived from its events."""
    found = next(current_labels(session, [pair_id]), None)
    return found or derive_label(pair_id, [])
