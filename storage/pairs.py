"""All pairs of a workspace as columns, for code that works on arrays (training, selection, search)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db import plain_rows
from storage.models import Pair


@dataclass(frozen=True)
class PairColumns:
    """All pairs in id order: ids (N,) int64, image paths and texts (N lists), splits (N,) object array,
    external_ids (N list): each pair's id as imported."""

    ids: np.ndarray
    image_paths: list[str]
    texts: list[str]
    splits: np.ndarray
    external_ids: list[str]


def all_pairs(session: Session) -> PairColumns:
    """Every pair in id order (N = 0 for an empty workspace)."""
    rows = session.execute(select(Pair.id, Pair.image_path, Pair.text, Pair.split, Pair.external_id)
                           .order_by(Pair.id)).all()
    return PairColumns(np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows], [r[2] for r in rows],
                       np.array([r[3] for r in rows], dtype=object), [r[4] for r in rows])


@dataclass(frozen=True)
class PairIndex:
    """All pairs in id order, ids (N,) int64 and splits (N,) object array: the columns of ``PairColumns``
    that selection needs, read without the N texts and image paths and without building a row object per
    pair (0.7 s instead of 3.8 s for ``all_pairs`` at 1M pairs)."""

    ids: np.ndarray
    splits: np.ndarray


def pair_index(session: Session) -> PairIndex:
    """Ids and splits of every pair in id order (N = 0 for an empty workspace)."""
    rows = plain_rows(session, select(Pair.id, Pair.split).order_by(Pair.id))
    return PairIndex(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
                     np.array([r[1] for r in rows], dtype=object))


def image_digests(session: Session, pair_ids: Sequence[int] | None = None) -> dict[int, str]:
    """Pair id -> ``image_sha256`` of every pair, or of ``pair_ids`` (pairs that share an image share the digest)."""
    if pair_ids is None:
        return {pid: digest for pid, digest in session.execute(select(Pair.id, Pair.image_sha256))}
    ids, out = [int(p) for p in pair_ids], {}
    for start in range(0, len(ids), 500):
        out.update(session.execute(select(Pair.id, Pair.image_sha256).where(Pair.id.in_(ids[start:start + 500]))).all())
    return out
