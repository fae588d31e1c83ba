"""The ``npz`` export: features of one image and one text encoder (``precomputed`` by default, else the
latest registered) for the pairs both cover, in pair-id order: ``image`` (N, Di), ``text`` (N, Dt),
``labels`` (N, C) 0/1, ``labelled`` (N,), ``split`` (N,), ``ids`` (N,) external ids,
``label_names`` (C,) - the ``features`` importer reads it back - and the live comments of those pairs'
events, ``comments`` (M,) with ``comment_rows`` (M,) int64, the row of each comment's pair.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.errors import NotFoundError
from storage.exporters.rows import BATCH
from storage.features import PRECOMPUTED, ids_path
from storage.models import Event, FeatureSet, Pair
from storage.pair_state import pair_states
from storage.progress import CountProgress
from storage.vocabulary import label_names


def _feature_set(session: Session, modality: str, encoder: str | None) -> FeatureSet:
    query = select(FeatureSet).where(FeatureSet.modality == modality)
    if encoder is not None:
        found = session.scalar(query.where(FeatureSet.encoder == encoder))
    else:
        found = session.scalar(query.where(FeatureSet.encoder == PRECOMPUTED)) or \
            session.scalar(query.order_by(FeatureSet.created_at.desc(), FeatureSet.id.desc()).limit(1))
    if found is None:
        which = f"from encoder {encoder!r} " if encoder else ""
        raise NotFoundError(f"npz export: no {modality} features {which}registered; import precomputed "
                            "features or run 'pairlab encode' first")
    return found


def write_npz(session: Session, tmp: Path, progress: CountProgress | None, image_encoder: str | None,
              text_encoder: str | None) -> int:
    sets = {m: _feature_set(session, m, e) for m, e in (("image", image_encoder), ("text", text_encoder))}
    matrices = {m: np.load(fs.path, mmap_mode="r") for m, fs in sets.items()}  # (rows, D), memory-mapped
    image_ids, text_ids = (np.load(ids_path(fs.path)) for fs in sets.values())
    pair_ids, image_rows, text_rows = np.intersect1d(image_ids, text_ids, assume_unique=True, return_indices=True)
    n, names = len(pair_ids), label_names(session)
    width = max(1, session.scalar(select(func.max(func.length(Pair.external_id)))) or 1)
    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".npz-parts-") as parts:
        def part(name, dtype, shape):
            return np.lib.format.open_memmap(Path(parts) / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

        labels, labelled = part("labels", np.float32, (n, len(names))), part("labelled", np.bool_, (n,))
        splits, ids = part("split", "<U5", (n,)), part("ids", f"<U{width}", (n,))
        column = {name: i for i, name in enumerate(names)}
        for start in range(0, n, BATCH):
            chunk = [int(p) for p in pair_ids[start:start + BATCH]]
            info = dict((pid, (ext, split)) for pid, ext, split in
                        session.execute(select(Pair.id, Pair.external_id, Pair.split).where(Pair.id.in_(chunk))))
            state = pair_states(session, chunk)
            for offset, pid in enumerate(chunk):
                i = start + offset
                ids[i], splits[i] = info[pid]
                current = state.get(pid)
                if current is not None and current.labels is not None:
                    labelled[i] = True
                    labels[i, [column[name] for name in current.labels]] = 1.0
            if progress is not None:
                progress(min(start + BATCH, n), n)
        comments, comment_rows = _comments(session, pair_ids, part)
        arrays = {"image": _rows_of(matrices["image"], image_rows, part, "image"),
                  "text": _rows_of(matrices["text"], text_rows, part, "text"),
                  "labels": labels, "labelled": labelled, "split": splits, "ids": ids,
                  "label_names": np.array(names, dtype=str), "comments": comments, "comment_rows": comment_rows}
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        del arrays, labels, labelled, splits, ids, comments, comment_rows
    return n


def _comments(session: Session, pair_ids: np.ndarray, part) -> tuple[np.ndarray, np.ndarray]:
    """The live comments of the events of ``pair_ids`` (sorted (N,)), in pair then event order, streamed into
    parts on disk: texts (M,) and their rows in ``pair_ids`` (M,)."""
    live = (Event.comment.is_not(None),
            Event.id.not_in(select(Event.undoes_id).where(Event.undoes_id.is_not(None))))
    bound = session.scalar(select(func.count(Event.id)).where(*live)) or 0
    if bound == 0:  # a memory map cannot be empty
        return np.zeros(0, dtype="<U1"), np.zeros(0, dtype=np.int64)
    width = max(1, session.scalar(select(func.max(func.length(Event.comment))).where(*live)) or 1)
    texts, rows = part("comments", f"<U{width}", (bound,)), part("comment_rows", np.int64, (bound,))
    kept = 0
    query = select(Event.pair_id, Event.comment).where(*live).order_by(Event.pair_id, Event.id)
    for pid, comment in session.execute(query.execution_options(yield_per=BATCH)):
        row = int(np.searchsorted(pair_ids, pid))
        if row < len(pair_ids) and pair_ids[row] == pid:  # pairs without both features are not exported
            texts[kept], rows[kept] = comment, row
            kept += 1
    return texts[:kept], rows[:kept]


def _rows_of(matrix: np.ndarray, rows: np.ndarray, part, name: str) -> np.ndarray:
    """``matrix[rows]`` without loading it: the memmap itself when ``rows`` is 0..n-1, else a gathered copy on disk."""
    if len(rows) == len(matrix) and np.array_equal(rows, np.arange(len(matrix))):
        return matrix
    out = part(name, np.float32, (len(rows), matrix.shape[1]))
    for start in range(0, len(rows), BATCH * 10):
        out[start:start + BATCH * 10] = matrix[rows[start:start + BATCH * 10]]
    return out
