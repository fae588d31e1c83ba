"""The ``npz`` export: features of one image and one text encoder (``precomputed`` by default, else the
latest registered) for the pairs both cover, in pair-id order: ``image`` (N, Di), ``text`` (N, Dt),
``labels`` (N, C) 0/1, ``labelled`` (N,), ``split`` (N,), ``ids`` (N,) external ids,
``label_names`` (C,) - the ``features`` importer reads it back.
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
from storage.models import FeatureSet, Pair
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
        arrays = {"image": _rows_of(matrices["image"], image_rows, part, "image"),
                  "text": _rows_of(matrices["text"], text_rows, part, "text"),
                  "labels": labels, "labelled": labelled, "split": splits, "ids": ids,
                  "label_names": np.array(names, dtype=str)}
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        del arrays, labels, labelled, splits, ids
    return n


def _rows_of(matrix: np.ndarray, rows: np.ndarray, part, name: str) -> np.ndarray:
    """``matrix[rows]`` without loading it: the memmap itself when ``rows`` is 0..n-1, else a gathered copy on disk."""
    if len(rows) == len(matrix) and np.array_equal(rows, np.arange(len(matrix))):
        return matrix
    out = part(name, np.float32, (len(rows), matrix.shape[1]))
    for start in range(0, len(rows), BATCH * 10):
        out[start:start + BATCH * 10] = matrix[rows[start:start + BATCH * 10]]
    return out
