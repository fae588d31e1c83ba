"""Rounds, selections and the annotation queue with leases.

``create_round`` records a selection and queues each pair ``overlap`` times (one slot per annotator
that should see it). ``claim_next`` hands an annotator one free slot atomically: under SQLite the
write transaction starts with ``BEGIN IMMEDIATE``, so claims serialise; under Postgres the row is
locked with ``FOR UPDATE SKIP LOCKED``, so different annotators' claims pass each other, and the
claimant's own ``users`` row is locked first (``FOR NO KEY UPDATE``), so one person's claims, submissions
and undos (several browser tabs) take turns and never see a slot of the same pair as free twice. A
lease that expires returns its slot to the queue.

A round is ``active`` (a strategy's choice; a pair is selected by active learning at most once, ever,
which the database enforces) or ``verification`` (audited pairs queued for the caption-match verdict: a
pair may be verified again in a later round). A ``submit`` in a verification round must carry a verdict;
its labels are optional, and none marked is recorded as "labels not judged" (``labels`` None), which
leaves the pair's labels as they were.

Claims take the open round of highest ``Round.priority`` first (a new round gets its number, so the newest
comes first; ``set_round_priority`` changes it), then pairs by rank. ``close_round`` ends a round: its
leases are released and its slots are never claimed again.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from storage.annotations import last_undoable_event, record_event
from storage.db import plain_rows
from storage.errors import ConflictError, NotFoundError, PairlabError, StaleLeaseError
from storage.models import (EVENT_KINDS, ROUND_KINDS, SPLITS, VERDICTS, Event, Pair, QueueItem, Round, Selection, User,
                            utcnow)


@dataclass(frozen=True)
class SelectedPair:
    """One pair chosen by a strategy, with its score breakdown."""

    pair_id: int
    score: float
    explanation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """A leased queue slot as the annotate page needs it."""

    queue_item_id: int
    pair_id: int
    external_id: str
    image_path: str
    text: str
    round_id: int
    round_number: int
    rank: int
    explanation: dict[str, Any]
    lease_expires_at: datetime
    round_kind: str = "active"

    @property
    def verification(self) -> bool:
        """The slot asks first for the caption-match verdict (a verification round)."""
        return self.round_kind == "verification"


def selectable_pair_ids(session: Session, *, splits: Sequence[str], labelled_by: Sequence[str]) -> np.ndarray:
    """Pairs of ``splits`` that no round has selected and no event of a ``labelled_by`` kind touched:
    (n,) int64, sorted. Raises ``ValueError`` for an unknown split or event kind.
    """
    for given, allowed, what in ((splits, SPLITS, "split"), (labelled_by, EVENT_KINDS, "event kind")):
        unknown = [v for v in given if v not in allowed]
        if unknown:
            raise ValueError(f"{what} {unknown[0]!r}; allowed: {', '.join(allowed)}")
    annotated = select(Event.pair_id).where(Event.kind.in_(list(labelled_by)))
    query = (select(Pair.id)
             .where(Pair.split.in_(list(splits)), Pair.id.not_in(select(Selection.pair_id)),
                    Pair.id.not_in(annotated))
             .order_by(Pair.id))
    rows = plain_rows(session, query)
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def create_round(session: Session, *, strategy: str, selected: Sequence[SelectedPair], params: dict[str, Any],
                 overlap: int = 1, assignees: Sequence[int] = (), model_version_id: int | None = None,
                 created_by: int | None = None, kind: str = "active") -> Round:
    """Record a round of ``kind`` (``ROUND_KINDS``) and queue its pairs.

    overlap: distinct annotators per pair. assignees: user ids the slots are dealt to round-robin
    (slot k of the r-th pair goes to ``assignees[(r + k) % len]``); empty means anyone may claim.
    Raises ``ConflictError`` when a concurrent selection took one of the pairs (or the round number)
    first: a pair is selected by an active round at most once, which the database enforces.
    """
    if kind not in ROUND_KINDS:
        raise ValueError(f"round kind {kind!r}; allowed: {', '.join(ROUND_KINDS)}")
    if overlap < 1:
        raise ValueError("overlap must be >= 1")
    if assignees and overlap > len(assignees):
        raise PairlabError(f"overlap {overlap} needs at least {overlap} assigned annotators, got {len(assignees)}")
    if len({s.pair_id for s in selected}) != len(selected):
        raise ValueError("selected pairs must be distinct")
    try:
        return _insert_round(session, kind, strategy, selected, params, overlap, assignees, model_version_id,
                             created_by)
    except IntegrityError:
        raise ConflictError("select: another selection took some of these pairs meanwhile; run it again") from None


def _insert_round(session, kind, strategy, selected, params, overlap, assignees, model_version_id, created_by) -> Round:
    number = (session.scalar(select(func.max(Round.number))) or 0) + 1
    rnd = Round(number=number, kind=kind, strategy=strategy, budget=len(selected), params=dict(params, overlap=overlap),
                model_version_id=model_version_id, created_by=created_by, priority=number)
    session.add(rnd)
    session.flush()
    if not selected:
        return rnd
    # two bulk inserts (a budget of 10,000 took 33 s as one flush per selection)
    selection_ids = list(session.scalars(insert(Selection).returning(Selection.id, sort_by_parameter_order=True), [
        {"round_id": rnd.id, "pair_id": item.pair_id, "kind": kind, "rank": rank, "score": float(item.score),
         "explanation": item.explanation} for rank, item in enumerate(selected)]))
    session.execute(insert(QueueItem), [
        {"selection_id": selection_id, "pair_id": item.pair_id, "round_id": rnd.id,
         "priority": number * 1_000_000 + rank, "slot": slot,
         "assignee_id": assignees[(rank + slot) % len(assignees)] if assignees else None}
        for rank, (item, selection_id) in enumerate(zip(selected, selection_ids)) for slot in range(overlap)])
    return rnd


def _free_slot(now: datetime):
    return and_(QueueItem.done_at.is_(None),
                or_(QueueItem.leased_by.is_(None), QueueItem.lease_expires_at < now))


def in_open_round():
    """The slot belongs to a round that is not closed."""
    return QueueItem.round_id.not_in(select(Round.id).where(Round.closed_at.is_not(None)))


def _round_priority():
    """The priority of the slot's round (a correlated subquery, so a claim locks only ``queue_items`` rows)."""
    return select(Round.priority).where(Round.id == QueueItem.round_id).scalar_subquery()


def claim_next(session: Session, user_id: int, *, lease_minutes: float) -> Claim | None:
    """Lease the next free slot to ``user_id`` (or return the lease it already holds).

    A user never gets two slots of the same pair, so overlap K means K distinct annotators, even when
    the same user claims from several tabs at once. Call inside ``Database.write()``. SQLite serialises
    writers (``BEGIN IMMEDIATE``); other databases lock the user's row, then the chosen slot with
    ``FOR UPDATE SKIP LOCKED`` so different users' claims pass each other.
    """
    _take_turn(session, user_id)
    now = utcnow()
    held = session.scalar(_live_lease_of(user_id, now))
    if held is None:
        mine = aliased(QueueItem)
        seen_by_me = select(mine.id).where(mine.pair_id == QueueItem.pair_id, mine.id != QueueItem.id,
                                           or_(mine.done_by == user_id,
                                               and_(mine.leased_by == user_id, mine.done_at.is_(None),
                                                    mine.lease_expires_at >= now))).exists()
        skipped_by_me = select(Event.id).where(Event.pair_id == QueueItem.pair_id, Event.round_id == QueueItem.round_id,
                                               Event.user_id == user_id, Event.kind == "skip").exists()
        query = (select(QueueItem)
                 .where(_free_slot(now), or_(QueueItem.assignee_id.is_(None), QueueItem.assignee_id == user_id),
                        in_open_round(), ~seen_by_me, ~skipped_by_me)
                 .order_by(_round_priority().desc(), QueueItem.priority, QueueItem.slot)
                 .limit(1))
        held = session.scalar(query.with_for_update(skip_locked=True))  # SQLite: no clause, the writer is alone
        if held is None:
            return None
    held.leased_by = user_id
    held.lease_expires_at = now + timedelta(minutes=lease_minutes)
    session.flush()
    return _claim_view(session, held)


def _live_lease_of(user_id: int, now: datetime):
    return (select(QueueItem).where(QueueItem.leased_by == user_id, QueueItem.done_at.is_(None),
                                    QueueItem.lease_expires_at >= now, in_open_round())
            .order_by(QueueItem.priority).limit(1))


def held_claim(session: Session, user_id: int) -> Claim | None:
    """The live lease ``user_id`` holds (the one ``claim_next`` would hand back), read without writing:
    how a reloaded Annotate page finds the pair it was showing."""
    held = session.scalar(_live_lease_of(user_id, utcnow()))
    return None if held is None else _claim_view(session, held)


def _take_turn(session: Session, user_id: int) -> None:
    """Wait until no other transaction is changing this user's slots (PostgreSQL: lock the user's row).

    ``FOR NO KEY UPDATE`` rather than ``FOR UPDATE``: any insert that references the user (an event, a
    job) takes ``FOR KEY SHARE`` on the row, which this lock lets through, so only claims, submissions and
    undos of the same user wait for each other. SQLite renders no clause: its write transaction already
    excludes every other writer.
    """
    found = session.scalar(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
    if found is None:
        raise NotFoundError(f"user {user_id} does not exist")


def _claim_view(session: Session, item: QueueItem) -> Claim:
    pair = session.get(Pair, item.pair_id)
    sel = session.get(Selection, item.selection_id)
    rnd = session.get(Round, item.round_id)
    return Claim(queue_item_id=item.id, pair_id=pair.id, external_id=pair.external_id, image_path=pair.image_path,
                 text=pair.text, round_id=rnd.id, round_number=rnd.number, rank=sel.rank,
                 explanation=dict(sel.explanation or {}), lease_expires_at=item.lease_expires_at, round_kind=rnd.kind)


def submit(session: Session, user_id: int, queue_item_id: int, *, pair_id: int | None = None, kind: str = "submit",
           labels: Sequence[str] | None = None, verdict: str | None = None, comment: str | None = None) -> Event:
    """Record the annotator's event for the slot they hold and close the slot for them.

    pair_id: the pair the person was shown (checked against the slot when given). Raises
    ``StaleLeaseError`` and writes nothing unless ``user_id`` holds a live lease on the slot (not done,
    leased to them, not expired): an answer is never recorded for a slot, or a pair, the person no longer
    holds. ``kind`` is ``submit``, ``skip`` or ``flag``; a skip hands the slot back to the queue. In a
    verification round a submit without a verdict raises ``PairlabError`` (nothing written), and no labels
    are recorded as None (not judged; see the module docstring).
    """
    if kind not in ("submit", "skip", "flag"):
        raise ValueError(f"kind {kind!r}; allowed: submit, skip, flag")
    _take_turn(session, user_id)
    item = session.scalar(select(QueueItem).where(QueueItem.id == queue_item_id).with_for_update())
    if item is None:
        raise NotFoundError(f"queue item {queue_item_id} does not exist")
    problem = lease_problem(item, user_id, pair_id, utcnow())
    if problem is not None:
        raise StaleLeaseError(problem)
    if kind == "submit" and session.scalar(select(Round.kind).where(Round.id == item.round_id)) == "verification":
        if verdict is None:
            raise PairlabError(f"verdict: this pair is in a verification round; say whether its caption matches "
                               f"the image ({', '.join(VERDICTS)}) before submitting")
        labels = list(labels) if labels else None
    event = record_event(session, pair_id=item.pair_id, user_id=user_id, kind=kind,
                         labels=None if kind == "skip" else labels, verdict=verdict, comment=comment,
                         round_id=item.round_id)
    if kind == "skip":
        item.leased_by, item.lease_expires_at = None, None
    else:
        item.done_by, item.done_at = user_id, utcnow()
    session.flush()
    return event


def lease_problem(item: QueueItem, user_id: int, pair_id: int | None, now: datetime) -> str | None:
    """Why ``user_id`` may not answer slot ``item`` for ``pair_id`` now, or None when they hold its lease."""
    if pair_id is not None and item.pair_id != pair_id:
        return f"queue item {item.id} is not a slot of pair {pair_id}"
    if item.done_at is not None:
        who = "you" if item.done_by == user_id else "another annotator"
        return f"this pair was already answered by {who} (in another tab?)"
    if item.leased_by != user_id:
        return "your lease on this pair expired and it went back to the queue" if item.leased_by is None \
            else "your lease on this pair expired and another annotator took it"
    if item.lease_expires_at is None or item.lease_expires_at < now:
        return "your lease on this pair expired"
    return None


def renew_lease(session: Session, user_id: int, queue_item_id: int, *, lease_minutes: float) -> datetime | None:
    """Extend a live lease of ``user_id`` on a slot (one UPDATE): the workbench's heartbeat while the
    pair is on screen. Returns the new expiry, or None when the lease is no longer theirs (done,
    expired or taken); an expired lease is never revived, since someone may have been handed the slot."""
    now = utcnow()
    expires = now + timedelta(minutes=lease_minutes)
    renewed = session.execute(
        update(QueueItem)
        .where(QueueItem.id == queue_item_id, QueueItem.leased_by == user_id, QueueItem.done_at.is_(None),
               QueueItem.lease_expires_at >= now)
        .values(lease_expires_at=expires)
        .execution_options(synchronize_session=False))
    return expires if renewed.rowcount == 1 else None


@dataclass(frozen=True)
class Undone:
    """What an undo retracted: the pair, the kind of the retracted event (submit, skip or flag) and its
    answer (labels, verdict, comment), so the workbench can put it back on screen."""

    pair_id: int
    kind: str
    labels: tuple[str, ...] | None = None
    verdict: str | None = None
    comment: str | None = None


def undo_last(session: Session, user_id: int, *, lease_minutes: float) -> Undone | None:
    """Retract the user's latest submit/skip/flag with an ``undo`` event and lease its slot back to them."""
    _take_turn(session, user_id)
    target = last_undoable_event(session, user_id)
    if target is None:
        return None
    record_event(session, pair_id=target.pair_id, user_id=user_id, kind="undo", round_id=target.round_id,
                 undoes_id=target.id)
    undone = Undone(target.pair_id, target.kind, None if target.labels is None else tuple(target.labels),
                    target.verdict, target.comment)
    if target.round_id is None:
        return undone
    now = utcnow()
    same_pair = and_(QueueItem.pair_id == target.pair_id, QueueItem.round_id == target.round_id)
    slot = session.scalar(select(QueueItem).where(same_pair, QueueItem.done_by == user_id))
    if slot is None:  # an undone skip: take back a free slot of that pair, if one is left
        slot = session.scalar(select(QueueItem).where(same_pair, _free_slot(now)).order_by(QueueItem.slot))
    if slot is not None:
        session.execute(update(QueueItem).where(QueueItem.leased_by == user_id, QueueItem.done_at.is_(None),
                                                QueueItem.id != slot.id)
                        .values(leased_by=None, lease_expires_at=None))
        slot.done_by, slot.done_at = None, None
        slot.leased_by, slot.lease_expires_at = user_id, now + timedelta(minutes=lease_minutes)
    session.flush()
    return undone


@dataclass(frozen=True)
class QueueStats:
    open_slots: int
    leased_slots: int
    done_slots: int


def queue_stats(session: Session, user_id: int | None = None) -> QueueStats:
    """Counts over the slots of open rounds, or over those a user may take."""
    now = utcnow()
    base = select(func.count(QueueItem.id)).where(in_open_round())
    if user_id is not None:
        base = base.where(or_(QueueItem.assignee_id.is_(None), QueueItem.assignee_id == user_id))
    done = session.scalar(base.where(QueueItem.done_at.is_not(None)))
    leased = session.scalar(base.where(QueueItem.done_at.is_(None), QueueItem.leased_by.is_not(None),
                                       QueueItem.lease_expires_at >= now))
    total = session.scalar(base)
    return QueueStats(open_slots=total - done - leased, leased_slots=leased, done_slots=done)


def _round(session: Session, number: int) -> Round:
    found = session.scalar(select(Round).where(Round.number == number))
    if found is None:
        raise NotFoundError(f"round {number} does not exist")
    return found


def set_round_priority(session: Session, number: int, priority: int) -> None:
    """Claims take slots of rounds with a higher ``priority`` first (a new round's priority is its number)."""
    _round(session, number).priority = int(priority)
    session.flush()


def close_round(session: Session, number: int) -> int:
    """Close round ``number``: its open leases are released and none of its slots is claimed again.
    Returns how many leases were released; closing a closed round changes nothing."""
    rnd = _round(session, number)
    if rnd.closed_at is not None:
        return 0
    rnd.closed_at = utcnow()
    released = session.execute(update(QueueItem)
                               .where(QueueItem.round_id == rnd.id, QueueItem.done_at.is_(None),
                                      QueueItem.leased_by.is_not(None))
                               .values(leased_by=None, lease_expires_at=None))
    session.flush()
    return released.rowcount
