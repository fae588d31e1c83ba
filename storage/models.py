"""The workspace schema (SQLAlchemy 2.x typed ORM).

Annotation events are append-only: a correction, an undo or an adjudication is a new event, so
nothing a person typed is ever lost. The current label of a pair is derived from its events
(``storage.annotations``) and kept materialised in ``pair_states`` (``storage.pair_state``), updated in
the transaction of each event, so the pages filter and page it in SQL instead of replaying the log.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, PrimaryKeyConstraint, String, Text,
                        UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA_VERSION = 6  # storage.migrations.MIGRATIONS upgrades older databases when a workspace opens

SPLITS = ("pool", "train", "val", "test")
ROLES = ("annotator", "reviewer", "operator", "system")
EVENT_KINDS = ("submit", "skip", "flag", "adjudicate", "undo", "import")
VERDICTS = ("match", "mismatch", "unsure")
ROUND_KINDS = ("active", "verification")  # active learning (select) or checking captions (audit --queue)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Meta(Base):
    """Key-value facts about the database itself, e.g. ``schema_version``."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Label(Base):
    """One class of the workspace's label vocabulary, in display order."""

    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    position: Mapped[int] = mapped_column(Integer)

    def __repr__(self) -> str:
        return f"Label({self.id}, {self.name!r})"


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"User({self.id}, {self.name!r}, {self.role})"


class Pair(Base):
    """An image and a text. ``image_path`` is absolute; ``image_sha256`` pins its content."""

    __tablename__ = "pairs"
    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    image_path: Mapped[str] = mapped_column(Text)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    split: Mapped[str] = mapped_column(String(8), default="pool", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    events: Mapped[list[Event]] = relationship(back_populates="pair", order_by="Event.id")

    def __repr__(self) -> str:
        return f"Pair({self.id}, {self.external_id!r}, split={self.split})"


class Round(Base):
    """One selection round: the strategy, its settings and the model version it scored with.

    kind: ``active`` (a selection strategy chose unlabelled pairs; a pair is in at most one such round,
    ever) or ``verification`` (audited pairs queued for a caption-match verdict; any pair, again and again).

    priority: claims take slots of the highest-priority open round first (``storage.queue``); a new round
    gets its number, so the newest comes first until an operator says otherwise. closed_at: set when an
    operator closes the round; its slots are never claimed again.
    """

    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    strategy: Mapped[str] = mapped_column(String(32))
    budget: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)

    selections: Mapped[list[Selection]] = relationship(back_populates="round", order_by="Selection.rank")

    def __repr__(self) -> str:
        return f"Round({self.number}, {self.strategy}, budget={self.budget})"


class Selection(Base):
    """A pair chosen in a round, with its score breakdown ("why selected").

    kind: the round's kind, copied so the database itself enforces that a pair is selected by active
    learning at most once, ever (a unique index on ``pair_id`` over the ``active`` rows); verification
    selections may repeat a pair across rounds, never within one.
    """

    __tablename__ = "selections"
    __table_args__ = (
        UniqueConstraint("round_id", "pair_id"),
        Index("ux_selections_active_pair", "pair_id", unique=True,
              sqlite_where=text("kind = 'active'"), postgresql_where=text("kind = 'active'")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"))
    kind: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    explanation: Mapped[dict[str, Any]] = mapped_column(default=dict)

    round: Mapped[Round] = relationship(back_populates="selections")
    pair: Mapped[Pair] = relationship()


class QueueItem(Base):
    """One annotation slot of a selected pair; a pair with overlap K has K slots.

    A slot is free when it is not done and its lease is absent or expired. ``assignee_id`` restricts
    a slot to one annotator (``--assign``); ``None`` means anyone may take it.
    """

    __tablename__ = "queue_items"
    __table_args__ = (
        UniqueConstraint("selection_id", "slot"),
        Index("ix_queue_open", "done_at", "lease_expires_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    selection_id: Mapped[int] = mapped_column(ForeignKey("selections.id"))
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"))
    priority: Mapped[int] = mapped_column(Integer)
    slot: Mapped[int] = mapped_column(Integer)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    leased_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    done_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    done_at: Mapped[datetime | None] = mapped_column(DateTime)


class Event(Base):
    """An append-only annotation event.

    kind: ``import`` (labels given with the data), ``submit``, ``skip``, ``flag``, ``adjudicate``
    (a reviewer's final word) or ``undo`` (``undoes_id`` names the event it retracts).
    labels: label names, or None when the event carries no labels (skip, flag, undo).
    """

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(12))
    labels: Mapped[list[Any] | None] = mapped_column()
    verdict: Mapped[str | None] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    undoes_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    pair: Mapped[Pair] = relationship(back_populates="events")
    user: Mapped[User] = relationship()

    def __repr__(self) -> str:
        return f"Event({self.id}, pair={self.pair_id}, {self.kind}, {self.labels})"


class PairState(Base):
    """The derived state of one pair that has events (``storage.annotations.derive_label``), materialised.

    Written only by ``storage.pair_state.refresh_pair_states`` in the transaction that adds the pair's
    events; ``pairlab rebuild-state`` recomputes it from the log. ``submit_votes``: the latest live
    ``submit`` of each annotator as ``[labels, verdict]`` (the agreement statistics), ``submitters`` its length.
    """

    __tablename__ = "pair_states"
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(12), index=True)
    labels: Mapped[list[Any] | None] = mapped_column()
    verdict: Mapped[str | None] = mapped_column(String(8))
    annotators: Mapped[list[Any]] = mapped_column()
    annotator_count: Mapped[int] = mapped_column(Integer)
    agreement: Mapped[float | None] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean)
    needs_review: Mapped[bool] = mapped_column(Boolean, index=True)
    comments: Mapped[list[Any]] = mapped_column()
    last_event_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    submit_votes: Mapped[list[Any]] = mapped_column()
    submitters: Mapped[int] = mapped_column(Integer, index=True)


class PairStateLabel(Base):
    """One label of a pair's current consensus (``PairState.labels``), for filtering by label in SQL."""

    __tablename__ = "pair_state_labels"
    __table_args__ = (PrimaryKeyConstraint("pair_id", "label"), Index("ix_pair_state_labels_label", "label", "pair_id"))
    pair_id: Mapped[int] = mapped_column(ForeignKey("pair_states.pair_id"))
    label: Mapped[str] = mapped_column(String(200))


class FeatureSet(Base):
    """A feature matrix on disk (``.npy``, memory-mapped) with the pair ids of its rows (``.ids.npy``)."""

    __tablename__ = "feature_sets"
    __table_args__ = (UniqueConstraint("modality", "encoder"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    modality: Mapped[str] = mapped_column(String(8))
    encoder: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text)
    dim: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ModelVersion(Base):
    """A trained model checkpoint and what it measured."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, unique=True)
    path: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    labelled_count: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """Background work (encode, train, select, export) run by ``pairlab worker``.

    status: queued -> running -> done | failed | cancelled (``storage.jobs``).
    """

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)  # the running worker's last sign of life
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime)

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.kind}, {self.status}, {self.progress:.0%})"


class UserSession(Base):
    """A signed-in browser session (``storage.sessions``): the token's public id, never the token itself.

    A session counts while ``revoked_at`` is unset and ``expires_at`` is in the future.
    """

    __tablename__ = "user_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class LoginAttempt(Base):
    """One sign-in attempt, for throttling per user name and per address (``storage.sessions``)."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_name", "name", "created_at"),
                      Index("ix_login_attempts_address", "address", "created_at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
class AuditRun(Base):
    """One mismatch audit (``pairlab audit``): the model version that scored it and its settings."""

    __tablename__ = "audit_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pairs: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuditScore(Base):
    """A pair's place in an audit's ranking: rank 1 is the most likely mismatched, with its breakdown."""

    __tablename__ = "audit_scores"
    __table_args__ = (Index("ix_audit_scores_rank", "audit_run_id", "rank"),)
    audit_run_id: Mapped[int] = mapped_column(ForeignKey("audit_runs.id"), primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    breakdown: Mapped[dict[str, Any]] = mapped_column(default=dict)
