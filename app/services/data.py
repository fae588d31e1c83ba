"""Workspace rows as the learner's arrays: pairs, current labels and feature matrices in one order."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.services.settings import EncoderChoice
from storage.errors import NotFoundError, PairlabError
from storage.features import load_features
from storage.pair_state import trusted_labels
from storage.pairs import PairColumns, PairIndex, all_pairs, pair_index
from storage.store import Store
from storage.vocabulary import label_names

TRAINING_SPLITS = ("pool", "train")  # trained on and selected from; "val" and "test" pairs are only evaluated
# Labelled states that train the model; a conflict waits for a reviewer.
TRUSTED_STATUSES = ("labelled", "adjudicated")


def pair_table(store: Store) -> PairColumns:
    """All pairs in id order; an error when the workspace has none."""
    with store.db.read() as s:
        return _some_pairs(store, all_pairs(s))


def pair_ids_and_splits(store: Store) -> PairIndex:
    """The ids and splits of all pairs in id order (``pair_table`` without texts and paths); an error when
    the workspace has none."""
    with store.db.read() as s:
        return _some_pairs(store, pair_index(s))


def _some_pairs(store: Store, table: PairColumns | PairIndex) -> PairColumns | PairIndex:
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
    """Current trusted labels of ``ids`` (N,) in that order, from the materialised pair state
    (``storage.pair_state.trusted_labels``: only the labelled pairs are read)."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    with store.db.read() as s:
        vocabulary = label_names(s)
        column = {name: j for j, name in enumerate(vocabulary)}
        labels = np.zeros((len(ids), len(vocabulary)), dtype=np.float32)
        labelled = np.zeros(len(ids), dtype=bool)
        for pair_id, names in trusted_labels(s, TRUSTED_STATUSES):
            where = np.searchsorted(ids, pair_id, sorter=order)
            if where == len(ids) or ids[order[where]] != pair_id:
                continue
            row = order[where]
            labelled[row] = True
            labels[row, [column[name] for name in names]] = 1.0
    return LabelMatrix(labels, labelled, vocabulary)


@dataclass(frozen=True)
class FeatureRows:
    """Rows ``where`` (n,) of a memory-mapped feature matrix (rows, D), read only when sliced.

    ``rows[a:b]`` gathers those rows into a float32 (b - a, D) array; ``take(positions)`` narrows the
    view without reading anything, so the selection path holds one batch of features at a time.
    """

    matrix: np.ndarray
    where: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.where), self.matrix.shape[1]

    def __len__(self) -> int:
        return len(self.where)

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice):
            raise TypeError("FeatureRows: slice it (rows[a:b]); narrow it with take()")
        return np.asarray(self.matrix[self.where[rows]], dtype=np.float32)

    def take(self, positions: np.ndarray) -> FeatureRows:
        return FeatureRows(self.matrix, self.where[np.asarray(positions, dtype=np.int64)])


def feature_rows(store: Store, ids: np.ndarray, choice: EncoderChoice) -> tuple[FeatureRows, FeatureRows]:
    """Image and text feature rows of ``ids`` in that order, memory-mapped; error if any pair lacks them."""
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
            out.append(FeatureRows(matrix, where))
    return out[0], out[1]


def feature_matrices(store: Store, ids: np.ndarray, choice: EncoderChoice) -> tuple[np.ndarray, np.ndarray]:
    """Image (N, Di) and text (N, Dt) features of ``ids`` in that order, read into memory (training and
    the cold start); the selection path reads ``feature_rows`` batch by batch instead."""
    image, text = feature_rows(store, ids, choice)
    return image[:], text[:]
