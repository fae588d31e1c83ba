"""The ``ascmr`` strategy: ASCMR informativeness (Qi et al., TPAMI 2025, §3) with our
density-aware budget allocation (DESIGN §5, docs/selection.md), made budget-aware: coverage
(semantic density) first while the model is weak, uncertainty once it is competent (DCoM,
Mishal & Weinshall 2024, arXiv 2407.01804)."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
from threadpoolctl import threadpool_limits

from learner.selection.base import ConfiguredStrategy, EmptyPoolError, PoolTooSmallError, Selection, seed_int
from learner.selection.density import (
    cluster_coverage, cluster_embeddings, cluster_weights, greedy_select, largest_remainder, max_similarity,
    semantic_density,
)
from learner.selection.scoring import (
    CHUNK_ROWS, COMPONENTS, InformativenessWeights, PoolScores, fused_means, informativeness, pool_scores, rank01,
)

logger = logging.getLogger(__name__)


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


#: ``AscmrConfig.cluster_rule`` values.
CLUSTER_RULES = ("budget", "labelled+budget")


@dataclass(frozen=True)
class AscmrConfig:
    """Configuration of the ``ascmr`` strategy (defaults in docs/selection.md).

    weights:            component weights of the informativeness I.
    k:                  neighbours for the semantic density rho (10).
    gamma:              exponent on a cluster's informativeness mass in its budget share (0.5).
    lam:                lambda, weight of the max-similarity penalty in the greedy (0.5).
    coverage_threshold: a pool pair counts as covered when its max cosine similarity to a
                        labelled pair exceeds this (0.8).
    n_clusters:         clusters for the allocation; None means the ``cluster_rule``'s count.
    cluster_rule:       the automatic cluster count: "budget", K = min(n, max_clusters); or
                        "labelled+budget", K = min(|L| + n, max_clusters) with |L| the labelled (and
                        pending) pairs, TypiClust's rule (Hacohen et al. 2022 §3.2), so the labelled
                        pairs can own clusters of their own and the budget goes to the uncovered ones.
    max_clusters:       cap on the automatic cluster count (256; the assignment costs n_pool K d).
    match_samples:      Monte-Carlo samples per modality for p_match (7, as in PCME).
    max_reference:      per-cluster reference sample for rho on large pools (256).
    exact_max_pool:     pools up to this size use exact global kNN for rho and exact max
                        similarity to the labelled set; larger pools restrict both to clusters.
    chunk_size:         rows per scoring chunk (16384).
    budget_aware:       mix coverage and uncertainty by the model's competence (``outputs.competence``,
                        measured by the caller on labelled held-out pairs): I = (1 - a) rank(rho) +
                        a I_unc, I_unc the rank fusion of the weighted components other than density,
                        a = the mixing weight (:func:`mixing_weight`). Without a competence (or with
                        budget_aware False) a is the weights' own uncertainty share, which is exactly
                        the plain weighted fusion.
    competence_low, competence_high: the ramp of a: 0 (coverage only) up to competence_low, 1
                        (uncertainty only) from competence_high, linear between.
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
    cluster_rule: str = "budget"
    max_clusters: int = 256
    match_samples: int = 7
    max_reference: int = 256
    exact_max_pool: int = 10_000
    chunk_size: int = CHUNK_ROWS
    n_jobs: int | None = None
    budget_aware: bool = True
    competence_low: float = 0.5
    competence_high: float = 0.9

    def __post_init__(self) -> None:
        checks = {
            "weights": isinstance(self.weights, InformativenessWeights),
            "k": self.k >= 1, "gamma": self.gamma >= 0, "lam": self.lam >= 0,
            "coverage_threshold": -1 <= self.coverage_threshold <= 1,
            "n_clusters": self.n_clusters is None or self.n_clusters >= 1,
            "cluster_rule": self.cluster_rule in CLUSTER_RULES,
            "max_clusters": self.max_clusters >= 1, "match_samples": self.match_samples >= 1,
            "max_reference": self.max_reference > self.k, "exact_max_pool": self.exact_max_pool >= 0,
            "chunk_size": self.chunk_size >= 1, "n_jobs": self.n_jobs is None or self.n_jobs >= 1,
            "competence_high": 0 <= self.competence_low < self.competence_high <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"AscmrConfig: invalid {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)} "
                             "(need k >= 1, gamma >= 0, lam >= 0, -1 <= coverage_threshold <= 1, "
                             "n_clusters None or >= 1, cluster_rule one of "
                             f"{', '.join(CLUSTER_RULES)}, max_reference > k, positive sizes, "
                             "0 <= competence_low < competence_high <= 1)")


def mixing_weight(config: AscmrConfig, competence: float | None) -> float:
    """The uncertainty share a in [0, 1] of ``ascmr``'s informativeness (see ``AscmrConfig``).

    Budget-aware with a competence: 0 up to competence_low, 1 from competence_high, linear
    between. Otherwise the weights' share of the components other than density.
    """
    per = config.weights.per_component()
    total, density = sum(per.values()), per.get("density", 0.0)
    if density == total:
        return 0.0
    if density == 0.0:
        return 1.0
    if not config.budget_aware or competence is None:
        return (total - density) / total
    span = config.competence_high - config.competence_low
    return float(np.clip((competence - config.competence_low) / span, 0.0, 1.0))


def mixed_informativeness(components: dict[str, np.ndarray], weights: InformativenessWeights,
                          alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """I = (1 - alpha) rank01(density) + alpha I_unc -> (I, rank01(density), I_unc), each (n,).

    I_unc: the rank fusion of the weighted components other than density (0 when none is weighted).
    """
    coverage = rank01(components["density"])
    unc_weights = {k: v for k, v in dataclasses.asdict(weights).items() if k != "density"}
    if sum(unc_weights.values()) > 0:
        uncertainty = informativeness(components, replace(weights, density=0.0))
    else:
        uncertainty = np.zeros_like(coverage)
    return (1 - alpha) * coverage + alpha * uncertainty, coverage, uncertainty


class AscmrStrategy(ConfiguredStrategy):
    """ASCMR informativeness + density-aware budget allocation (DESIGN §5; docs/selection.md).

    1. components per pool pair (scoring.pool_scores) and the fused, normalised mu_z;
    2. clusters: MiniBatchKMeans on mu_z, K = n_clusters or min(n, max_clusters);
    3. rho: semantic density (exact, or cluster-restricted for pools > exact_max_pool);
    4. I = (1 - a) rank(rho) + a I_unc, a the mixing weight from the model's competence;
    5. per-cluster budget from (sum I)^gamma (1 - coverage), largest remainder;
    6. greedy in each cluster on I - lam * max sim to labelled and already selected pairs.
    """

    name = "ascmr"
    config_class = AscmrConfig
    config: AscmrConfig
    single_threaded_blas = True

    def _query(self, outputs, pool, labelled, n, rng):
        cfg = self.config
        clock = _PhaseClock()
        scored = pool_scores(outputs, pool, match_samples=cfg.match_samples, seed=rng, chunk_size=cfg.chunk_size,
                             n_jobs=cfg.n_jobs or os.cpu_count() or 1)
        mu_l = fused_means(outputs, labelled, chunk_size=cfg.chunk_size)
        clock.lap("scoring")
        return self._allocate(scored, mu_l, pool, n, rng, clock, outputs.competence)

    def query_scored(self, scored: PoolScores, mu_labelled: np.ndarray, n: int, rng: np.random.Generator, *,
                     competence: float | None = None) -> Selection:
        """Steps 2-6 on a pool scored elsewhere, batch by batch (``learner.selection.streaming``).

        scored: components and mu_z of the n_pool pool pairs; mu_labelled: (m, d) fused means of the
        labelled pairs; rng: the generator that drew the scoring's match noise, so the result equals
        ``query`` on the same outputs with the same seed.  Selection indices are pool positions.
        competence: as ``InferenceOutputs.competence`` (the mixing weight's input).
        """
        n_pool = len(scored.mu_z)
        if n_pool == 0:
            raise EmptyPoolError("pool_indices: the pool is empty; nothing left to select")
        if not 1 <= n <= n_pool:
            raise PoolTooSmallError(f"n: budget {n} exceeds the pool size {n_pool}")
        with threadpool_limits(limits=1, user_api="blas"):
            selection = self._allocate(scored, mu_labelled, np.arange(n_pool), n, rng, _PhaseClock(), competence)
        self.last_scores = selection.scores
        return selection

    def _allocate(self, scored: PoolScores, mu_l: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator,
                  clock: _PhaseClock, competence: float | None) -> Selection:
        cfg = self.config
        automatic = n + (len(mu_l) if cfg.cluster_rule == "labelled+budget" else 0)
        n_clusters = min(len(pool), cfg.n_clusters or min(automatic, cfg.max_clusters))
        clusters, clusters_l = cluster_embeddings(scored.mu_z, mu_l, n_clusters=n_clusters, seed=seed_int(rng))
        clock.lap("clustering")
        exact = len(pool) <= cfg.exact_max_pool
        rho = semantic_density(scored.mu_z, k=cfg.k, clusters=None if exact else clusters,
                               max_reference=None if exact else cfg.max_reference, seed=seed_int(rng))
        components = {**scored.components, "density": rho}
        alpha = mixing_weight(cfg, competence)
        info, coverage_part, uncertainty_part = mixed_informativeness(components, cfg.weights, alpha)
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
             "mixing_weight": alpha, "competence": competence,
             "coverage_part": float(coverage_part[p]), "uncertainty_part": float(uncertainty_part[p]),
             "cluster": int(clusters[p]), "clusters": n_clusters, "cluster_budget": int(budget[clusters[p]]),
             "cluster_coverage": float(coverage[clusters[p]]),
             **{name: float(components[name][p]) for name in (*COMPONENTS, "density")}}
            for i, (p, v, s) in enumerate(zip(picks.tolist(), value.tolist(), penalty.tolist()))
        ]
        clock.lap("greedy+explanation")
        logger.debug("ascmr phases (K=%d clusters, %s): %s", n_clusters, "exact" if exact else "cluster-restricted",
                     clock.summary())
        return Selection(self.name, pool[picks], info, explanation, self.params())
