"""Active-learning query strategies: small classes over the learner's arrays (small-text style).

Every strategy implements ``query(outputs, pool_indices, labelled_indices, n, *, seed) -> Selection``
on :class:`learner.outputs.InferenceOutputs` (arrays only; no model, storage or UI).  Input is
validated once here, at the public edge, with typed errors; the scoring and density functions
below this layer assume valid input.  The last pool scores stay on the strategy as
``last_scores`` so the UI can show them.

- ``ascmr``: ASCMR (Qi et al., TPAMI 2025) informativeness with our density-aware budget
  allocation (DESIGN §5, docs/selection.md).
- ``random``; ``entropy`` (joint predictive entropy); ``bald`` (Houlsby et al. 2011 with MC
  dropout, Gal et al. 2017); ``coreset`` (k-center greedy, Sener & Savarese 2018); ``badge``
  (Ash et al., ICLR 2020); ``inter`` (lowest mu_v . mu_t, the ASCMR baseline).
- :func:`cold_start`: k-means on raw encoder features for the first batch, before any model.
"""
from __future__ import annotations

import dataclasses
import logging
import numbers
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus
from sklearn.metrics import pairwise_distances_argmin_min
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from learner.outputs import InferenceOutputs
from learner.selection.density import (
    cluster_coverage, cluster_embeddings, cluster_weights, greedy_select, k_center_greedy,
    largest_remainder, max_similarity, semantic_density,
)
from learner.selection.scoring import (
    COMPONENTS, InformativenessWeights, bernoulli_entropy, fused_means, informativeness,
    mc_entropy_and_mutual_information, pool_scores,
)

logger = logging.getLogger(__name__)

_CHUNK = 16384  # rows per chunk for the per-row scores of the baselines


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


# --------------------------------------------------------------------------- validation

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


def _seed_int(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def _per_row(rows: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply fn(row chunk) -> (len(chunk),) over rows in chunks; (len(rows),) float64."""
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), _CHUNK):
        out[start:start + _CHUNK] = fn(rows[start:start + _CHUNK])
    return out


def _descending_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score, highest first (ties by position)."""
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    return ranks


class _PhaseClock:
    """Wall-clock seconds per named phase, for debug logging."""

    def __init__(self) -> None:
        self.last, self.laps = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self.last = now - self.last, now

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.laps.items())


def _top_n(strategy: str, pool: np.ndarray, scores: np.ndarray, n: int,
           details: dict[str, np.ndarray], params: dict[str, Any]) -> Selection:
    """Selection of the n highest pool scores, with the named per-pool details explained."""
    top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    top = top[np.lexsort((top, -scores[top]))]                                    # score desc, then position
    explanation = [
        {"index": int(pool[p]), "order": order, "rank": order + 1, "score": float(scores[p]),
         **{key: float(values[p]) for key, values in details.items()}}
        for order, p in enumerate(top.tolist())
    ]
    return Selection(strategy, pool[top], scores, explanation, params)


# --------------------------------------------------------------------------- strategies

class QueryStrategy(ABC):
    """Base of the query strategies: validates input, runs ``_query``, keeps ``last_scores``."""

    name: ClassVar[str]

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


class RandomStrategy(QueryStrategy):
    """Uniform sampling without replacement: the n largest of i.i.d. uniform keys."""

    name = "random"

    def _query(self, outputs, pool, labelled, n, rng):
        return _top_n(self.name, pool, rng.random(len(pool)), n, {}, self.params())


class EntropyStrategy(QueryStrategy):
    """Joint predictive entropy: sum_c h((p_v,c + p_t,c) / 2) of the averaged branch probabilities."""

    name = "entropy"

    def _query(self, outputs, pool, labelled, n, rng):
        ent = _per_row(pool, lambda r: bernoulli_entropy((outputs.probs_image[r] + outputs.probs_text[r]) / 2))
        return _top_n(self.name, pool, ent, n, {"entropy": ent}, self.params())


class BaldStrategy(QueryStrategy):
    """BALD (Houlsby et al. 2011, eq. 2) on MC-dropout class probabilities (Gal et al. 2017)."""

    name = "bald"

    def _check(self, outputs):
        if outputs.dropout_probs is None or outputs.dropout_probs.shape[1] == 0:
            raise ValueError("bald: outputs.dropout_probs is missing; run inference with MC dropout "
                             "(K' >= 1 passes, shape (N, K', C)) or choose another strategy")

    def _query(self, outputs, pool, labelled, n, rng):
        ent = np.empty(len(pool))
        mi = np.empty(len(pool))
        for start in range(0, len(pool), _CHUNK):
            s = slice(start, start + _CHUNK)
            ent[s], mi[s] = mc_entropy_and_mutual_information(outputs.dropout_probs[pool[s]])
        return _top_n(self.name, pool, mi, n, {"mutual_information": mi, "entropy": ent}, self.params())


class CoresetStrategy(QueryStrategy):
    """k-center greedy (Sener & Savarese 2018) on the fused joint means mu_z.

    Scores: a picked pair's distance to the nearest centre when it was picked; any other pair's
    distance to the nearest labelled or selected pair after the batch.
    """

    name = "coreset"

    def _query(self, outputs, pool, labelled, n, rng):
        x = fused_means(outputs, np.concatenate([pool, labelled]))
        picks, dist, remaining = k_center_greedy(x, np.arange(len(pool)), np.arange(len(pool), len(x)), n)
        scores = remaining                                                         # distance to L u S after the batch,
        scores[picks] = dist                                                       # picked: distance when picked
        explanation = [{"index": int(pool[p]), "order": order, "rank": order + 1, "score": float(d),
                        "distance_to_centres": float(d)}
                       for order, (p, d) in enumerate(zip(picks.tolist(), dist.tolist()))]
        return Selection(self.name, pool[picks], scores, explanation, self.params())


@dataclass(frozen=True)
class BadgeConfig:
    """max_candidates: BADGE materialises (m, C d) float32 gradient embeddings, so pools larger than
    this are subsampled (seeded, uniformly) to max(max_candidates, n) candidates first (default
    5000: 5000 x 80 x 256 x 4 B = 410 MB)."""

    max_candidates: int = 5000

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ValueError(f"BadgeConfig.max_candidates: expected >= 1, got {self.max_candidates}")


class BadgeStrategy(QueryStrategy):
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings.

    The classifier is one linear layer on the common space, so with multi-label BCE and the
    pseudo-label y = round(p) the gradient of the loss w.r.t. its weights is (p - y) outer mu, a
    (C d)-vector; p averages the two branches and mu is the fused joint mean mu_z.
    """

    name = "badge"

    def __init__(self, config: BadgeConfig | None = None) -> None:
        super().__init__()
        self.config = config or BadgeConfig()

    def params(self):
        return dataclasses.asdict(self.config)

    def _query(self, outputs, pool, labelled, n, rng):
        def residual(rows):                                                       # (m, C)
            p = (outputs.probs_image[rows] + outputs.probs_text[rows]) / 2
            return (p - np.round(p)).astype(np.float32)

        norm = _per_row(pool, lambda r: np.linalg.norm(residual(r), axis=1))      # = ||g|| as ||mu_z|| = 1
        size = min(len(pool), max(self.config.max_candidates, n))
        cand = np.arange(len(pool)) if size == len(pool) else np.sort(rng.choice(len(pool), size, replace=False))
        mu = fused_means(outputs, pool[cand])                                     # (m, d)
        grad = (residual(pool[cand])[:, :, None] * mu[:, None, :]).reshape(len(cand), -1)   # (m, C d)
        _, seeds = kmeans_plusplus(grad, n_clusters=n, random_state=_seed_int(rng))
        picks = list(dict.fromkeys(cand[seeds].tolist()))                         # k-means++ can repeat
        if len(picks) < n:                                                        # identical points: fill
            taken = np.zeros(len(pool), dtype=bool)
            taken[picks] = True
            rest = np.flatnonzero(~taken)
            picks += rest[np.argsort(-norm[rest], kind="stable")[:n - len(picks)]].tolist()
        explanation = [{"index": int(pool[p]), "order": order, "rank": order + 1, "score": float(norm[p]),
                        "gradient_norm": float(norm[p])} for order, p in enumerate(picks)]
        return Selection(self.name, pool[np.asarray(picks, dtype=np.int64)], norm, explanation, self.params())


class InterStrategy(QueryStrategy):
    """The ASCMR inter-modality baseline: the pairs with the lowest mu_v . mu_t."""

    name = "inter"

    def _query(self, outputs, pool, labelled, n, rng):
        dot = _per_row(pool, lambda r: np.einsum("nd,nd->n", outputs.mu_image[r], outputs.mu_text[r]))
        return _top_n(self.name, pool, -dot, n, {"mu_dot": dot}, self.params())


@dataclass(frozen=True)
class AscmrConfig:
    """Configuration of the ``ascmr`` strategy (defaults in docs/selection.md).

    weights:            component weights of the informativeness I.
    k:                  neighbours for the semantic density rho (10).
    gamma:              exponent on a cluster's informativeness mass in its budget share (0.5).
    lam:                lambda, weight of the max-similarity penalty in the greedy (0.5).
    coverage_threshold: a pool pair counts as covered when its max cosine similarity to a
                        labelled pair exceeds this (0.8).
    n_clusters:         clusters for the allocation; None means min(n, max_clusters).
    max_clusters:       cap on the automatic cluster count (256; the assignment costs n_pool K d).
    match_samples:      Monte-Carlo samples per modality for p_match (7, as in PCME).
    max_reference:      per-cluster reference sample for rho on large pools (256).
    exact_max_pool:     pools up to this size use exact global kNN for rho and exact max
                        similarity to the labelled set; larger pools restrict both to clusters.
    chunk_size:         rows per scoring chunk (16384).
    n_jobs:             threads scoring chunks concurrently; None means os.cpu_count().  The
                        result does not depend on it.  BLAS runs single-threaded inside the query
                        (as scikit-learn's KMeans does) so threads never oversubscribe the cores.
    """

    weights: InformativenessWeights = field(default_factory=InformativenessWeights)
    k: int = 10
    gamma: float = 0.5
    lam: float = 0.5
    coverage_threshold: float = 0.8
    n_clusters: int | None = None
    max_clusters: int = 256
    match_samples: int = 7
    max_reference: int = 256
    exact_max_pool: int = 10_000
    chunk_size: int = 16384
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "weights": isinstance(self.weights, InformativenessWeights),
            "k": self.k >= 1, "gamma": self.gamma >= 0, "lam": self.lam >= 0,
            "coverage_threshold": -1 <= self.coverage_threshold <= 1,
            "n_clusters": self.n_clusters is None or self.n_clusters >= 1,
            "max_clusters": self.max_clusters >= 1, "match_samples": self.match_samples >= 1,
            "max_reference": self.max_reference > self.k, "exact_max_pool": self.exact_max_pool >= 0,
            "chunk_size": self.chunk_size >= 1, "n_jobs": self.n_jobs is None or self.n_jobs >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"AscmrConfig: invalid {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)} "
                             "(need k >= 1, gamma >= 0, lam >= 0, -1 <= coverage_threshold <= 1, "
                             "n_clusters None or >= 1, max_reference > k, positive sizes)")


class AscmrStrategy(QueryStrategy):
    """ASCMR informativeness + density-aware budget allocation (DESIGN §5; docs/selection.md).

    1. components per pool pair (scoring.pool_scores) and the fused, normalised mu_z;
    2. clusters: MiniBatchKMeans on mu_z, K = n_clusters or min(n, max_clusters);
    3. rho: semantic density (exact, or cluster-restricted for pools > exact_max_pool);
    4. I = rank-weighted informativeness including rho;
    5. per-cluster budget from (sum I)^gamma (1 - coverage), largest remainder;
    6. greedy in each cluster on I - lam * max sim to labelled and already selected pairs.
    """

    name = "ascmr"

    def __init__(self, config: AscmrConfig | None = None) -> None:
        super().__init__()
        self.config = config or AscmrConfig()

    def params(self):
        return dataclasses.asdict(self.config)

    def _query(self, outputs, pool, labelled, n, rng):
        with threadpool_limits(limits=1, user_api="blas"):
            return self._select(outputs, pool, labelled, n, rng)

    def _select(self, outputs, pool, labelled, n, rng):
        cfg = self.config
        clock = _PhaseClock()
        scored = pool_scores(outputs, pool, match_samples=cfg.match_samples, seed=rng, chunk_size=cfg.chunk_size,
                             n_jobs=cfg.n_jobs or os.cpu_count() or 1)
        mu_l = fused_means(outputs, labelled, chunk_size=cfg.chunk_size)
        clock.lap("scoring")
        n_clusters = min(len(pool), cfg.n_clusters or min(n, cfg.max_clusters))
        clusters, clusters_l = cluster_embeddings(scored.mu_z, mu_l, n_clusters=n_clusters, seed=_seed_int(rng))
        clock.lap("clustering")
        exact = len(pool) <= cfg.exact_max_pool
        rho = semantic_density(scored.mu_z, k=cfg.k, clusters=None if exact else clusters,
                               max_reference=None if exact else cfg.max_reference, seed=_seed_int(rng))
        components = {**scored.components, "density": rho}
        info = informativeness(components, cfg.weights)
        clock.lap("density+informativeness")
        sim_l = (max_similarity(scored.mu_z, mu_l) if exact else
                 max_similarity(scored.mu_z, mu_l, x_clusters=clusters, ref_clusters=clusters_l))
        coverage = cluster_coverage(sim_l, clusters, n_clusters=n_clusters, threshold=cfg.coverage_threshold)
        size = np.bincount(clusters, minlength=n_clusters)
        budget = largest_remainder(cluster_weights(info, clusters, coverage, gamma=cfg.gamma), size, n)
        clock.lap("coverage+allocation")
        picks, value, penalty = greedy_select(scored.mu_z, info, clusters, budget, sim_l, lam=cfg.lam)
        order = np.lexsort((picks, -value))                                        # final score desc
        picks, value, penalty = picks[order], value[order], penalty[order]
        rank = _descending_ranks(info)
        explanation = [
            {"index": int(pool[p]), "order": i, "rank": int(rank[p]), "score": float(v),
             "informativeness": float(info[p]), "max_similarity": float(s),
             "cluster": int(clusters[p]), "cluster_budget": int(budget[clusters[p]]),
             "cluster_coverage": float(coverage[clusters[p]]),
             **{name: float(components[name][p]) for name in (*COMPONENTS, "density")}}
            for i, (p, v, s) in enumerate(zip(picks.tolist(), value.tolist(), penalty.tolist()))
        ]
        clock.lap("greedy+explanation")
        logger.debug("ascmr phases (K=%d clusters, %s): %s", n_clusters, "exact" if exact else "cluster-restricted",
                     clock.summary())
        return Selection(self.name, pool[picks], info, explanation, self.params())


# --------------------------------------------------------------------------- cold start

def cold_start(raw_features: np.ndarray, pool_indices: Any, n: int, *, seed: int = 0,
               fit_size: int = 20_000) -> Selection:
    """First batch without a model (DESIGN §5): k-means on the raw encoder features.

    raw_features: (N, D) finite encoder features (e.g. image and text features concatenated);
    pool_indices: rows to select from.  The pool rows are standardised (zero mean, unit variance
    per feature), MiniBatchKMeans with n clusters is fitted on up to max(fit_size, 40 n) of them,
    and for each centroid the nearest pool row is taken, distinct: when two centroids claim the
    same row the closer one keeps it and the other takes its next nearest.  Items are ordered by
    cluster size, largest first.  Selection.scores is minus each pool row's distance to its
    nearest centroid.
    """
    raw = np.asarray(raw_features)
    if raw.ndim != 2:
        raise ValueError(f"raw_features: expected shape (N, D), got {raw.shape}")
    pool, _ = validate_query(raw.shape[0], pool_indices, np.zeros(0, dtype=np.int64), n)
    x = StandardScaler().fit_transform(raw[pool]).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("raw_features: must be finite")
    rng = np.random.default_rng(seed)
    size = min(len(pool), max(fit_size, 40 * n))
    sample = x if size == len(pool) else x[np.sort(rng.choice(len(pool), size, replace=False))]
    model = MiniBatchKMeans(n_clusters=n, batch_size=2048, n_init=3, random_state=seed).fit(sample)
    centres = model.cluster_centers_.astype(np.float32)
    labels, dist_all = pairwise_distances_argmin_min(x, centres)
    chosen = np.full(n, -1, dtype=np.int64)
    chosen_dist = np.zeros(n)
    free = np.ones(len(pool), dtype=bool)
    waiting = np.arange(n)
    while waiting.size:
        cand = np.flatnonzero(free)
        nearest, dist = pairwise_distances_argmin_min(centres[waiting], x[cand])
        by_dist = np.argsort(dist, kind="stable")
        _, first = np.unique(nearest[by_dist], return_index=True)                 # closest claim wins
        win = by_dist[first]
        chosen[waiting[win]] = cand[nearest[win]]
        chosen_dist[waiting[win]] = dist[win]
        free[cand[nearest[win]]] = False
        waiting = np.delete(waiting, win)
    sizes = np.bincount(labels, minlength=n)
    order = np.lexsort((np.arange(n), -sizes))
    explanation = [{"index": int(pool[chosen[c]]), "order": i, "rank": i + 1, "score": float(-chosen_dist[c]),
                    "cluster": int(c), "cluster_size": int(sizes[c]), "distance_to_centroid": float(chosen_dist[c])}
                   for i, c in enumerate(order.tolist())]
    return Selection("cold_start", pool[chosen[order]], -dist_all.astype(np.float64), explanation,
                     {"seed": seed, "fit_size": fit_size})


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, tuple[type[QueryStrategy], type | None]] = {
    "ascmr": (AscmrStrategy, AscmrConfig),
    "random": (RandomStrategy, None),
    "entropy": (EntropyStrategy, None),
    "bald": (BaldStrategy, None),
    "coreset": (CoresetStrategy, None),
    "badge": (BadgeStrategy, BadgeConfig),
    "inter": (InterStrategy, None),
}

STRATEGY_NAMES = tuple(_REGISTRY)


def get_strategy(name: str, **config: Any) -> QueryStrategy:
    """The strategy registered as ``name``, configured by keyword (fields of its config dataclass).

    ``get_strategy("ascmr", gamma=1.0, weights={"density": 0.0})``; a ``weights`` mapping is turned
    into :class:`InformativenessWeights`.  Unknown names or fields raise ValueError listing the
    allowed ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGY_NAMES)}")
    cls, config_cls = _REGISTRY[name]
    if config_cls is None:
        if config:
            raise ValueError(f"strategy {name!r} takes no options, got {sorted(config)}")
        return cls()
    allowed = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"strategy {name!r}: unknown options {unknown}; allowed: {', '.join(allowed)}")
    if isinstance(config.get("weights"), dict):
        fields = [f.name for f in dataclasses.fields(InformativenessWeights)]
        unknown = sorted(set(config["weights"]) - set(fields))
        if unknown:
            raise ValueError(f"strategy {name!r}: unknown weights {unknown}; allowed: {', '.join(fields)}")
        config["weights"] = InformativenessWeights(**config["weights"])
    return cls(config_cls(**config))
