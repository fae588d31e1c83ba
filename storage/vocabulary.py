"""The label vocabulary: append-only, in display order."""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Label
from storage.text import text_problem

MAX_LABEL_LENGTH = 200


def label_names(session: Session) -> list[str]:
    return list(session.scalars(select(Label.name).order_by(Label.position)))


def add_labels(session: Session, names: Iterable[str]) -> list[str]:
    """Append the names not yet in the vocabulary (order kept); return the ones added."""
    existing = set(label_names(session))
    position = session.scalar(select(func.coalesce(func.max(Label.position), -1))) + 1
    added = []
    for raw in names:
        name = clean_label(raw)
        if name in existing:
            continue
        session.add(Label(name=name, position=position))
        existing.add(name)
        added.append(name)
        position += 1
    return added


def clean_label(raw: str) -> str:
    """Strip a label name; raise ``ValueError`` when it is empty, too long, breaks the one-line text rule
    (``storage.text``) or contains ``|`` (the CSV separator)."""
    if not isinstance(raw, str):
        raise ValueError(f"label {repr(raw)[:60]} is not a string")
    name = raw.strip()
    if not name:
        raise ValueError("empty label name")
    if len(name) > MAX_LABEL_LENGTH:
        raise ValueError(f"label name longer than {MAX_LABEL_LENGTH} characters")
    problem = text_problem(name, single_line=True)
    if problem is not None:
        raise ValueError(f"label name: {problem}")
    if "|" in name:
        raise ValueError(f"label {name!r} contains '|', the CSV label separator")
    return name
