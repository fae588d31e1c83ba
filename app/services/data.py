"""Workspace rows as the learner's arrays: pairs, current labels and feature matrices in one order."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.services.settings import EncoderChoice
from storage.annotations import current_labels
from storage.errors import NotFoundError, PairlabError
from storage.features import load_features
from storage.pairs import PairColumns, all_pairs
from storage.store import Store
from storage.vocabulary import label_names

TRAINING_SPLITS = ("pool", "train")  # trained on and selected from; "val" and "test" pairs are only evaluated
# Labelled states that train the model; a conflict waits for a reviewer.
TRUSTED_STATUSES = ("labelled", "adjudicated")


def pair_table(store: Store) -> PairColumns:
    """All pairs in id order; an error when the workspace has none."""
    with store.db.read() as s:
        table = all_pairs(s)
    if len(table.ids) == 0:
        raise PairlabError(f"{store.root}: the workspace has no pairs; run 'pairlab import' first")
    return table


@dataclass(frozen=True)
class LabelMatrix:
    """labels (N, C) float32 0/1, labelled (N,) bool, and the vocabulary naming the C columns."""

    labels: np.ndarray
    labelled: np.ndarray
    vocabulary: list[str]


def label_matrix(store: Store, ids: np.ndarray) -> LabelMatrix:
    """Current trusted labels of ``ids`` (N,) in that order."""
    position = {int(pid): i for i, pid in enumerate(ids)}
    with store.db.read() as s:
        vocabulary = label_names(s)
        column = {name: j for j, name in enumerate(vocabulary)}
        labels = np.zeros((len(ids), len(vocabulary)), dtype=np.float32)
        labelled = np.zeros(len(ids), dtype=bool)
        for current in current_labels(s):
            row = position.get(current.pair_id)
            if row is None or current.labels is None or current.status not in TRUSTED_STATUSES:
                continue
            labelled[row] = True
            labels[row, [column[name] for name in current.labels]] = 1.0
    return LabelMatrix(labels, labelled, vocabulary)


def feature_matrices(store: Store, ids: np.ndarray, choice: EncoderChoice) -> tuple[np.ndarray, np.ndarray]:
    """Image (N, Di) and text (N, Dt) features of ``ids`` in that order; error if any pair lacks them."""
    out = []
    with store.db.read() as s:
        for modality, encoder in (("image", choice.image), ("text", choice.text)):
            try:
                matrix, row_ids = load_features(s, modality, encoder)
            except NotFoundError:
                raise PairlabError(f"no {modality} features from {encoder!r}; run 'pairlab encode "
                                   f"{store.root}' first") from None
            order = np.argsort(row_ids)
            where = np.searchsorted(row_ids, ids, sorter=order)
            where = order[np.minimum(where, len(order) - 1)]
            missing = row_ids[where] != ids
            if missing.any():
                raise PairlabError(f"{int(missing.sum())} pairs (e.g. pair {int(ids[missing][0])}) have no "
                                   f"{modality} features from {encoder!r}; run 'pairlab encode {store.root}'")
            out.append(np.asarray(matrix[where], dtype=np.float32))
    return out[0], out[1]
