"""The query-strategy contract (small-text style): typed errors, ``Selection``, input validation
and the ``QueryStrategy`` base class.

Every strategy implements ``query(outputs, pool_indices, labelled_indices, n, *, seed) -> Selection``
on :class:`learner.outputs.InferenceOutputs` (arrays only; no model, storage or UI).  Input is
validated once here, at the public edge, with typed errors; the scoring and density functions
below this layer assume valid input.  The last pool scores stay on the strategy as
``last_scores`` so the UI can show them.
"""
from __future__ import annotations

import dataclasses
import logging
import numbers
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import threadpool_limits

from learner.outputs import InferenceOutputs

logger = logging.getLogger(__name__)


class SelectionError(ValueError):
    """A query that cannot be answered as asked."""


class EmptyPoolError(SelectionError):
    """The pool has no pairs left to select from."""


class PoolTooSmallError(SelectionError):
    """The budget n is larger than the pool."""


@dataclass(frozen=True)
class Selection:
    """The answer of a query.

    strategy:    registry name of the strategy.
    indices:     (n,) int64 rows of the outputs, in the order to present them.
    scores:      (n_pool,) float64 pool scores aligned with the pool indices (also ``last_scores``).
    explanation: one JSON-serialisable dict per selected index (same order): "why selected".
    params:      the strategy's configuration, to record with the round.
    """

    strategy: str
    indices: np.ndarray
    scores: np.ndarray
    explanation: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)


def _index_array(values: Any, name: str, n_rows: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-d array of row indices, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer row indices, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_rows:
        raise ValueError(f"{name}: row indices must lie in [0, {n_rows}), got [{arr.min()}, {arr.max()}]")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name}: row indices must be distinct")
    return arr.astype(np.int64)


def validate_query(n_rows: int, pool_indices: Any, labelled_indices: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check a query's pool, labelled set and budget; return them as int64 arrays.

    Raises EmptyPoolError (no pool), PoolTooSmallError (n > pool size) and ValueError (an index
    out of range or repeated, pool and labelled overlapping, n not a positive integer).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n: expected a positive integer budget, got {n!r}")
    pool = _index_array(pool_indices, "pool_indices", n_rows)
    labelled = _index_array(labelled_indices, "labelled_indices", n_rows)
    if pool.size == 0:
        raise EmptyPoolError("pool_indices: the pool is empty; nothing left to select")
    if n > pool.size:
        raise PoolTooSmallError(f"n: budget {n} exceeds the pool size {pool.size}")
    if labelled.size:
        in_pool = np.zeros(n_rows, dtype=bool)
        in_pool[pool] = True
        if in_pool[labelled].any():
            raise ValueError("labelled_indices: overlaps pool_indices; a labelled pair cannot be selected")
    return pool, labelled


def seed_int(rng: np.random.Generator) -> int:
    """A 31-bit integer seed drawn from ``rng``, for libraries that take an int (scikit-learn)."""
    return int(rng.integers(2**31 - 1))


class QueryStrategy(ABC):
    """Base of the query strategies: validates input, runs ``_query``, keeps ``last_scores``.

    single_threaded_blas: run ``_query`` with BLAS limited to one thread (``threadpoolctl``, as
    scikit-learn's KMeans does): for strategies whose parallelism comes from their own threads and
    scikit-learn's OpenMP loops, where many small products on a multi-threaded BLAS were up to 2.5x
    slower on a busy 2-core machine (docs/selection.md).
    """

    name: ClassVar[str]
    single_threaded_blas: ClassVar[bool] = False

    def __init__(self) -> None:
        self.last_scores: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        """The configuration to record with the round."""
        return {}

    def query(self, outputs: InferenceOutputs, pool_indices: Any, labelled_indices: Any, n: int, *,
              seed: int | np.random.Generator = 0) -> Selection:
        """Select n pool rows of ``outputs``.

        outputs: the learner's arrays for N rows; pool_indices, labelled_indices: disjoint row
        indices into them; n: budget, 1 <= n <= len(pool_indices); seed: int or Generator (the
        result is deterministic for a given int seed).
        """
        if not isinstance(outputs, InferenceOutputs):
            raise TypeError(f"outputs: expected InferenceOutputs, got {type(outputs).__name__}")
        pool, labelled = validate_query(outputs.n, pool_indices, labelled_indices, n)
        self._check(outputs)
        start = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas") if self.single_threaded_blas else nullcontext():
            selection = self._query(outputs, pool, labelled, int(n), np.random.default_rng(seed))
        logger.info("%s: selected %d of %d pool pairs in %.2f s", self.name, n, len(pool),
                    time.perf_counter() - start)
        self.last_scores = selection.scores
        return selection

    def _check(self, outputs: InferenceOutputs) -> None:
        """Strategy-specific checks of the outputs (e.g. that optional arrays are present)."""

    @abstractmethod
    def _query(self, outputs: InferenceOutputs, pool: np.ndarray, labelled: np.ndarray, n: int,
               rng: np.random.Generator) -> Selection:
        """Valid input from here on."""


class ConfiguredStrategy(QueryStrategy):
    """A strategy with options: one frozen config dataclass (``config_class``), recorded as its params."""

    config_class: ClassVar[type]

    def __init__(self, config: Any = None) -> None:
        super().__init__()
        self.config = self.config_class() if config is None else config

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)
