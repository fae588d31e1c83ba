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
from storage.pair_state import STATE_COLUMNS, to_current_label
from storage.queue import queue_stats
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
    votes = [[set(labels) for labels, _ in unit] for unit in overlapping]
    verdicts = [[verdict for _, verdict in unit if verdict] for unit in overlapping]
    return AgreementSummary(len(overlapping), label_alphas(votes, names), nominal_alpha(verdicts))


# --- rounds ------------------------------------------------------------------------------------

def round_history(session: Session) -> list[dict[str, Any]]:
    """One row per round, newest first: strategy, budget, overlap, slots (done) and who created it."""
    done = dict(session.execute(select(QueueItem.round_id, func.count(QueueItem.id))
                                .where(QueueItem.done_at.is_not(None)).group_by(QueueItem.round_id)).all())
    slots = dict(session.execute(select(QueueItem.round_id, func.count(QueueItem.id))
                                 .group_by(QueueItem.round_id)).all())
    rows = session.execute(select(Round, User.name).outerjoin(User, User.id == Round.created_by)
                           .order_by(Round.number.desc())).all()
    return [{"round": r.number, "strategy": r.strategy, "budget": r.budget,
             "overlap": (r.params or {}).get("overlap", 1), "slots done": done.get(r.id, 0),
             "slots": slots.get(r.id, 0), "model version": r.model_version_id, "by": name or "",
             "created (UTC)": r.created_at.strftime("%Y-%m-%d %H:%M")} for r, name in rows]


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
