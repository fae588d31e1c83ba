"""Trained model versions: the checkpoint of each, what it measured and the features it was trained on.

Versions are numbered 1, 2, ... in the order they are added; a warm-started version names its parent.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import ModelVersion


@dataclass(frozen=True)
class ModelVersionInfo:
    """One model version.

    path: its checkpoint file. labelled_count: labelled pairs it was trained on. metrics: what it
    measured (e.g. ``{"validation": {...}, "test": {...}}``). features: modality -> the feature
    signature (``storage.features.feature_signature``) it was trained on (``config["features"]``).
    """

    version: int
    path: str
    labelled_count: int
    metrics: dict[str, Any]
    features: dict[str, str]

    def summary(self) -> dict[str, Any]:
        """What a ``train`` job records as its result."""
        return {"version": self.version, "labelled": self.labelled_count, "metrics": self.metrics}


def _info(row: ModelVersion) -> ModelVersionInfo:
    return ModelVersionInfo(row.version, row.path, row.labelled_count, dict(row.metrics or {}),
                            dict((row.config or {}).get("features", {})))


def latest_model_version(session: Session) -> ModelVersionInfo | None:
    """The highest version, or None before the first model is trained."""
    row = session.scalar(select(ModelVersion).order_by(ModelVersion.version.desc()).limit(1))
    return None if row is None else _info(row)


def model_version_of_job(session: Session, job_id: int, *, since: datetime | None = None) -> ModelVersionInfo | None:
    """The version a ``train`` job recorded (``config["job_id"]``), or None; ``since``: only versions
    created from then on are looked at (the job's start)."""
    query = select(ModelVersion).order_by(ModelVersion.version)
    if since is not None:
        query = query.where(ModelVersion.created_at >= since)
    return next((_info(row) for row in session.scalars(query) if (row.config or {}).get("job_id") == job_id), None)


def checkpoint_paths(session: Session) -> list[str]:
    """The checkpoint path of every version."""
    return list(session.scalars(select(ModelVersion.path)))


def latest_version_number(session: Session) -> int | None:
    """The highest version number (without loading the row), or None before the first model."""
    return session.scalar(select(func.max(ModelVersion.version)))


def latest_validation_pairs(session: Session) -> list[int] | None:
    """The pair ids the latest version held out for validation (its ``config["validation_pairs"]``);
    None before the first version or when it recorded none."""
    config = session.scalar(select(ModelVersion.config).order_by(ModelVersion.version.desc()).limit(1))
    pairs = (config or {}).get("validation_pairs")
    return None if pairs is None else [int(p) for p in pairs]


def model_version_id(session: Session, version: int) -> int | None:
    """The row id of version ``version``, or None when there is no such version."""
    return session.scalar(select(ModelVersion.id).where(ModelVersion.version == version))


def add_model_version(session: Session, *, path: str | Path, parent_version: int | None, labelled_count: int,
                      metrics: dict[str, Any], config: dict[str, Any]) -> int:
    """Record a new version (the highest so far + 1) and return its number.

    parent_version: the version it was warm-started from (its row becomes ``parent_id``), or None.
    config: what it was trained with; its ``features`` entry is ``ModelVersionInfo.features``, its ``job_id``
    the ``train`` job that trained it (``model_version_of_job``), if any.
    """
    version = (latest_version_number(session) or 0) + 1
    session.add(ModelVersion(version=version, path=str(path),
                             parent_id=None if parent_version is None else model_version_id(session, parent_version),
                             labelled_count=labelled_count, metrics=metrics, config=config))
    return version
