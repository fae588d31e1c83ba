"""Read models for the workbench pages: plain dataclasses and rows, read from the caller's session.

Every function takes ``session`` first; the caller owns it (``with store.db.read() as session``).
The vocabulary, the user list and one job come from ``storage.vocabulary.label_names``,
``storage.users.list_users`` and ``storage.jobs.get_job``; the latest model version number from
``storage.model_versions.latest_version_number``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from storage.agreement import LabelAgreement, label_alphas, nominal_alpha
from storage.annotations import CurrentLabel
from storage.models import Event, ModelVersion, Pair, PairState, PairStateLabel, QueueItem, Round, User, utcnow
from storage.pair_state import STATE_COLUMNS, pair_states, to_current_label
from storage.queue import in_open_round, queue_stats
from storage.users import PERMISSIONS, UserInfo, list_users
from storage.vocabulary import label_names

ANNOTATION_KINDS = ("submit", "skip", "flag")
STATUSES = ("unlabelled", "labelled", "conflict", "adjudicated")


def annotator_names(session: Session) -> list[str]:
    """Names of the users who may annotate, by name."""
    return [u.name for u in list_users(session) if u.role in PERMISSIONS["annotate"]]


# --- annotate ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnnotatorProgress:
    waiting: int  # slots this user may still take
    done_total: int  # slots done by anyone (of those this user may take)
    mine_last_hour: int
    mine_this_session: int
    mine_total: int


def annotator_progress(session: Session, user: UserInfo, session_started: datetime | None) -> AnnotatorProgress:
    """Queue counts for ``user`` and their annotation events (last hour, since ``session_started``, all)."""
    now = utcnow()
    mine = select(func.count(Event.id)).where(Event.user_id == user.id, Event.kind.in_(ANNOTATION_KINDS))
    stats = queue_stats(session, user.id)
    total = session.scalar(mine)
    last_hour = session.scalar(mine.where(Event.created_at >= now - timedelta(hours=1)))
    this_session = session.scalar(mine.where(Event.created_at >= session_started)) if session_started else 0
    return AnnotatorProgress(stats.open_slots + stats.leased_slots, stats.done_slots, last_hour, this_session, total)


# --- review ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReviewItem:
    pair_id: int
    text: str
    image_path: str
    label: CurrentLabel

    @property
    def reasons(self) -> list[str]:
        out = []
        if self.label.status == "conflict":
            out.append("annotators disagree")
        if self.label.flagged:
            out.append("flagged")
        if self.label.verdict == "mismatch":
            out.append("caption mismatch")
        return out


@dataclass(frozen=True)
class Vote:
    user: str
    kind: str
    labels: tuple[str, ...] | None
    verdict: str | None
    comment: str | None
    created_at: datetime


def review_queue(session: Session, *, limit: int = 500) -> list[ReviewItem]:
    """Pairs that need a reviewer's word (conflict, flagged or caption mismatch), by pair id, first ``limit``
    (an indexed filter on the materialised state, ``storage.pair_state``)."""
    rows = session.execute(select(Pair.text, Pair.image_path, *STATE_COLUMNS)
                           .join(PairState, PairState.pair_id == Pair.id)
                           .where(PairState.needs_review.is_(True)).order_by(PairState.pair_id).limit(limit))
    return [ReviewItem(r.pair_id, r.text, r.image_path, to_current_label(r)) for r in rows]


def pair_votes(session: Session, pair_id: int) -> list[Vote]:
    """The pair's events that still count (undone ones and undo events left out), oldest first."""
    rows = session.execute(select(Event, User.name).join(User, User.id == Event.user_id)
                           .where(Event.pair_id == pair_id).order_by(Event.id)).all()
    undone = {e.undoes_id for e, _ in rows if e.kind == "undo"}
    return [Vote(name, e.kind, None if e.labels is None else tuple(e.labels), e.verdict, e.comment, e.created_at)
            for e, name in rows if e.kind != "undo" and e.id not in undone]


@dataclass(frozen=True)
class AgreementSummary:
    pairs: int  # pairs labelled by at least two annotators
    labels: list[LabelAgreement]
    verdict_alpha: float

    @property
    def mean_label_alpha(self) -> float:
        scored = [a.alpha for a in self.labels if a.alpha == a.alpha]
        return sum(scored) / len(scored) if scored else float("nan")


def agreement_summary(session: Session) -> AgreementSummary:
    """Krippendorff's alpha per label (binary) and for the caption verdict, over overlapping annotations:
    each annotator's latest live submit of the pairs that at least two annotators submitted
    (``storage.agreement``; Krippendorff 2004, §11.3), read from the materialised state."""
    names = label_names(session)
    overlapping = list(session.scalars(select(PairState.submit_votes).where(PairState.submitters >= 2)
                                       .order_by(PairState.pair_id)))
    votes = [[set(labels) for labels, _ in unit if labels is not None] for unit in overlapping]  # None: verdict only
    verdicts = [[verdict for _, verdict in unit if verdict] for unit in overlapping]
    return AgreementSummary(len(overlapping), label_alphas(votes, names), nominal_alpha(verdicts))


# --- rounds ------------------------------------------------------------------------------------

def round_history(session: Session) -> list[dict[str, Any]]:
    """One row per round, newest first: kind (active or verification), strategy, budget, overlap, slots (done), who created it, its claim
    priority and whether it is closed."""
    done = dict(session.execute(select(QueueItem.round_id, func.count(QueueItem.id))
                                .where(QueueItem.done_at.is_not(None)).group_by(QueueItem.round_id)).all())
    slots = dict(session.execute(select(QueueItem.round_id, func.count(QueueItem.id))
                                 .group_by(QueueItem.round_id)).all())
    rows = session.execute(select(Round, User.name).outerjoin(User, User.id == Round.created_by)
                           .order_by(Round.number.desc())).all()
    return [{"round": r.number, "kind": r.kind, "strategy": r.strategy, "budget": r.budget,
             "overlap": (r.params or {}).get("overlap", 1), "slots done": done.get(r.id, 0),
             "slots": slots.get(r.id, 0), "model version": r.model_version_id, "by": name or "",
             "created (UTC)": r.created_at.strftime("%Y-%m-%d %H:%M"), "priority": r.priority,
             "closed": r.closed_at is not None} for r, name in rows]


def learning_curve(session: Session) -> list[dict[str, Any]]:
    """One row per model version: labelled count and mAP (i2t, t2i, avg) on the test split, or on the
    labelled validation split when the workspace has no labelled test pairs (DESIGN §7)."""
    rows = []
    for v in session.scalars(select(ModelVersion).order_by(ModelVersion.version)).all():
        metrics = v.metrics or {}
        source = "test" if metrics.get("test") else "validation"
        scores = metrics.get(source) or {}
        rows.append({"version": v.version, "labelled": v.labelled_count, "measured_on": source,
                     **{f"{source} {k}": float(scores[k]) for k in ("i2t", "t2i", "avg") if k in scores}})
    return rows


def label_distribution(session: Session) -> dict[str, int]:
    """How many pairs currently carry each label (vocabulary order, zeros kept); one grouped count."""
    counts = dict(session.execute(select(PairStateLabel.label, func.count())
                                  .group_by(PairStateLabel.label)).all())
    return {name: counts.get(name, 0) for name in label_names(session)}


def annotator_activity(session: Session, *, days: int = 14) -> list[dict[str, Any]]:
    """Annotation events per annotator per day over the last ``days`` days."""
    since = utcnow() - timedelta(days=days)
    day = func.date(Event.created_at)
    rows = session.execute(select(User.name, day, func.count(Event.id)).join(User, User.id == Event.user_id)
                           .where(Event.kind.in_(ANNOTATION_KINDS + ("adjudicate",)), Event.created_at >= since)
                           .group_by(User.name, day).order_by(day)).all()
    return [{"annotator": name, "day": str(d), "events": n} for name, d, n in rows]


# --- explore -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairRow:
    pair_id: int
    external_id: str
    text: str
    image_path: str
    split: str
    labels: tuple[str, ...] | None
    status: str
    verdict: str | None
    rounds: tuple[int, ...]


def round_numbers(session: Session) -> list[int]:
    """Every round number, ascending."""
    return list(session.scalars(select(Round.number).order_by(Round.number)))


@dataclass(frozen=True)
class PairBrief:
    image_path: str
    text: str


def pairs_by_id(session: Session, pair_ids: Sequence[int]) -> dict[int, PairBrief]:
    """Image path and text of each of ``pair_ids`` that exists."""
    rows = session.execute(select(Pair.id, Pair.image_path, Pair.text).where(Pair.id.in_(list(pair_ids))))
    return {pid: PairBrief(path, text) for pid, path, text in rows}


def browse_pairs(session: Session, *, labels: Sequence[str] = (), statuses: Sequence[str] = (),
                 round_number: int | None = None, split: str | None = None,
                 limit: int = 200, offset: int = 0) -> tuple[list[PairRow], int]:
    """Pairs matching every filter given (any of ``labels``; any of ``statuses``), ``limit`` of them by id
    from ``offset``, and how many matched in all. Filters, count and page run in SQL on the materialised
    state (``storage.pair_state``), joined only when a filter needs it; a pair without events is
    ``unlabelled``."""
    query = select(Pair.id)
    if split:
        query = query.where(Pair.split == split)
    if statuses:
        if "unlabelled" in statuses:
            query = query.outerjoin(PairState, PairState.pair_id == Pair.id).where(
                or_(PairState.pair_id.is_(None), PairState.status.in_(list(statuses))))
        else:
            query = query.join(PairState, PairState.pair_id == Pair.id).where(PairState.status.in_(list(statuses)))
    if labels:
        query = query.where(Pair.id.in_(select(PairStateLabel.pair_id).where(PairStateLabel.label.in_(list(labels)))))
    if round_number is not None:
        query = query.where(Pair.id.in_(select(QueueItem.pair_id).join(Round, Round.id == QueueItem.round_id)
                                        .where(Round.number == round_number)))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    page = list(session.scalars(query.order_by(Pair.id).limit(limit).offset(offset)))
    rows = session.execute(select(Pair.id, Pair.external_id, Pair.text, Pair.image_path, Pair.split, PairState.labels,
                                  func.coalesce(PairState.status, "unlabelled"), PairState.verdict)
                           .outerjoin(PairState, PairState.pair_id == Pair.id)
                           .where(Pair.id.in_(page)).order_by(Pair.id)).all()
    in_rounds: dict[int, list[int]] = {}
    for pid, number in session.execute(select(QueueItem.pair_id, Round.number).join(Round, Round.id == QueueItem.round_id)
                                       .where(QueueItem.pair_id.in_(page)).distinct()):
        in_rounds.setdefault(pid, []).append(number)
    return [PairRow(pid, ext, text, image, pair_split, None if current is None else tuple(current), state, verdict,
                    tuple(sorted(in_rounds.get(pid, ())))) for pid, ext, text, image, pair_split, current, state, verdict
            in rows], total


# --- progress (Rounds, and the annotator's own on Annotate) ------------------------------------

PAUSE_SECONDS = 600.0  # a gap between two of a person's answers longer than this is a break, not work on a pair
AGREEMENT_WINDOW = 2000  # agreement with the consensus is measured over the latest this-many submissions


@dataclass(frozen=True)
class Progress:
    """One annotator's or one round's progress.

    done / assigned: queue slots done, and slots that are theirs (done, leased, or assigned and still open;
    for a round: all of its slots). seconds_per_pair: mean gap between consecutive answers of a person
    (submit, skip, flag), gaps over ``PAUSE_SECONDS`` left out as breaks; None without such a gap.
    agreement: share of their ``compared`` latest live submissions (among the latest ``AGREEMENT_WINDOW``)
    whose label set equals the pair's consensus, counting only pairs with two or more annotators or an
    adjudication; None when nothing compares.
    """

    name: str
    done: int
    assigned: int
    seconds_per_pair: float | None
    agreement: float | None
    compared: int


def _seconds_between(session: Session, later, earlier):
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _pace(session: Session, by: str, user_id: int | None = None) -> dict[int, float]:
    """Mean seconds per answer by ``user_id`` or ``round_id`` (gaps between a person's consecutive answers,
    breaks left out), aggregated in SQL with a window function."""
    answers = select(Event.user_id, Event.round_id, Event.created_at.label("at"),
                     func.lag(Event.created_at).over(partition_by=Event.user_id,
                                                     order_by=(Event.created_at, Event.id)).label("previous"))
    answers = answers.where(Event.kind.in_(ANNOTATION_KINDS))
    if user_id is not None:
        answers = answers.where(Event.user_id == user_id)
    sub = answers.subquery()
    gap = _seconds_between(session, sub.c.at, sub.c.previous)
    key = sub.c[by]
    rows = session.execute(select(key, func.avg(gap)).where(sub.c.previous.is_not(None), key.is_not(None),
                                                            gap <= PAUSE_SECONDS).group_by(key))
    return {k: float(v) for k, v in rows if v is not None}


def _agreement(session: Session, by: str, user_id: int | None = None) -> dict[int, tuple[int, int]]:
    """(matches, compared) by ``user_id`` or ``round_id`` over the latest ``AGREEMENT_WINDOW`` submissions
    (bounded: the consensus is derived for those pairs only)."""
    query = select(Event.id, Event.pair_id, Event.user_id, Event.round_id, Event.labels).where(Event.kind == "submit")
    if user_id is not None:
        query = query.where(Event.user_id == user_id)
    rows = session.execute(query.order_by(Event.id.desc()).limit(AGREEMENT_WINDOW)).all()
    if not rows:
        return {}
    undone = set(session.scalars(select(Event.undoes_id).where(Event.undoes_id.in_([r.id for r in rows]))))
    consensus = pair_states(session, {r.pair_id for r in rows})
    seen: set[tuple[int, int]] = set()
    counts: dict[int, list[int]] = {}
    for r in rows:  # newest first: the first of each (person, pair) is their latest
        if r.id in undone or (r.user_id, r.pair_id) in seen:
            continue
        seen.add((r.user_id, r.pair_id))
        current = consensus.get(r.pair_id)
        key = getattr(r, by)
        if current is None or key is None or (current.status != "adjudicated" and len(current.annotators) < 2):
            continue
        tally = counts.setdefault(key, [0, 0])
        tally[0] += set(r.labels or ()) == set(current.labels or ())
        tally[1] += 1
    return {k: (m, n) for k, (m, n) in counts.items()}


def _slots_by_person(session: Session, user_id: int | None = None) -> tuple[dict[int, int], dict[int, int]]:
    """(done, assigned) slot counts per person: done by them; theirs = done, leased now, or assigned and open."""
    now = utcnow()

    def grouped(column, *conditions) -> dict[int, int]:
        query = select(column, func.count(QueueItem.id)).where(column.is_not(None), *conditions)
        if user_id is not None:
            query = query.where(column == user_id)
        return dict(session.execute(query.group_by(column)).all())

    done = grouped(QueueItem.done_by)
    waiting = grouped(QueueItem.assignee_id, QueueItem.done_at.is_(None), in_open_round())
    leased = grouped(QueueItem.leased_by, QueueItem.done_at.is_(None), QueueItem.assignee_id.is_(None),
                     QueueItem.lease_expires_at >= now, in_open_round())
    people = set(done) | set(waiting) | set(leased)
    return done, {p: done.get(p, 0) + waiting.get(p, 0) + leased.get(p, 0) for p in people}


def _progress(name: str, key: int, done: dict, assigned: dict, pace: dict, agreement: dict) -> Progress:
    matches, compared = agreement.get(key, (0, 0))
    return Progress(name, done.get(key, 0), assigned.get(key, 0), pace.get(key),
                    matches / compared if compared else None, compared)


def annotator_progress_table(session: Session) -> list[Progress]:
    """One row per person who may annotate and has slots or answers, by name."""
    done, assigned = _slots_by_person(session)
    pace, agreement = _pace(session, "user_id"), _agreement(session, "user_id")
    active = set(assigned) | set(pace) | set(agreement)
    return [_progress(u.name, u.id, done, assigned, pace, agreement)
            for u in list_users(session) if u.role in PERMISSIONS["annotate"] and u.id in active]


def round_progress_table(session: Session) -> list[Progress]:
    """One row per round, newest first (``name`` is "round N", with "(closed)" once closed)."""
    slots = (select(QueueItem.round_id, func.count(QueueItem.id), func.count(QueueItem.done_at))
             .group_by(QueueItem.round_id))
    counts = {rid: (total, finished) for rid, total, finished in session.execute(slots)}
    done = {rid: finished for rid, (_, finished) in counts.items()}
    assigned = {rid: total for rid, (total, _) in counts.items()}
    pace, agreement = _pace(session, "round_id"), _agreement(session, "round_id")
    rounds = session.execute(select(Round.id, Round.number, Round.closed_at).order_by(Round.number.desc()))
    return [_progress(f"round {number}" + (" (closed)" if closed else ""), rid, done, assigned, pace, agreement)
            for rid, number, closed in rounds]


def own_progress(session: Session, user: UserInfo) -> Progress:
    """``user``'s own progress (the compact figure for the Annotate page): the same measures as a row of
    ``annotator_progress_table``, read for that user only."""
    done, assigned = _slots_by_person(session, user.id)
    return _progress(user.name, user.id, done, assigned, _pace(session, "user_id", user.id),
                     _agreement(session, "user_id", user.id))
