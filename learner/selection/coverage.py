"""Low-budget coverage strategies: ``typiclust`` and ``probcover`` on the fused joint means mu_z.

With a few labels per class, typical and well-spread pairs beat uncertain ones (../shared/docs/
RESEARCH.md). Both strategies work on the L2-normalised joint means of every pool and labelled
row, so cosine distance is 1 - dot product. The labelled rows (in the workspace also the pairs
queued by earlier rounds and not annotated yet) count as covered.

- TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, arXiv 2202.02794): k-means into |L| + n
  clusters; repeatedly take the most typical member of the largest cluster with no covered
  member (then the fewest covered, largest first); typicality(x) = 1 / mean distance to its k
  nearest neighbours in its cluster (k = 20).
- ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022, arXiv 2205.11320): balls of
  radius delta on a kNN graph; delta is the largest radius at which at least ``purity`` of the
  balls hold one k-means pseudo-label only (as far as the kNN graph can certify); greedy max
  coverage: repeatedly take the pool row whose ball holds the most still-uncovered rows, ties at
  random.

kNN and clustering go through scikit-learn (MiniBatchKMeans, NearestNeighbors); nothing here is
hand-rolled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

from learner.selection.base import ConfiguredStrategy, Selection, seed_int
from learner.selection.density import cluster_embeddings, semantic_density
from learner.selection.scoring import fused_means


def typicality(x: np.ndarray, clusters: np.ndarray, *, k: int = 20, max_reference: int | None = 1024,
               seed: int = 0) -> np.ndarray:
    """TypiClust typicality 1 / mean cosine distance to the k nearest neighbours in the row's cluster.

    x: (n, d) L2-normalised; clusters: (n,) labels. Uses :func:`semantic_density` (mean cosine
    similarity rho to the k nearest, cluster-restricted, sampled to ``max_reference`` references
    in large clusters), so typicality = 1 / (1 - rho); (n,) float64, 0 for a row alone in its cluster.
    """
    rho = semantic_density(x, k=k, clusters=clusters, max_reference=max_reference, seed=seed)
    alone = np.bincount(clusters)[clusters] < 2
    return np.where(alone, 0.0, 1.0 / np.maximum(1.0 - rho, 1e-6))


@dataclass(frozen=True)
class TypiclustConfig:
    """k: neighbours for typicality (20, as in the paper); max_clusters: cap on |L| + n clusters (the
    assignment costs n K d); max_reference: typicality references per cluster on large clusters."""

    k: int = 20
    max_clusters: int = 1000
    max_reference: int = 1024

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_clusters < 1 or self.max_reference <= self.k:
            raise ValueError(f"TypiclustConfig: need k >= 1, max_clusters >= 1, max_reference > k; got {self}")


class TypiclustStrategy(ConfiguredStrategy):
    """TypiClust (Hacohen et al., ICML 2022) on mu_z of pool and covered rows."""

    name = "typiclust"
    config_class = TypiclustConfig
    config: TypiclustConfig
    single_threaded_blas = True

    def _query(self, outputs, pool, labelled, n, rng):
        cfg = self.config
        x = fused_means(outputs, np.concatenate([pool, labelled]))                # (m + l, d), pool first
        n_clusters = min(len(x), len(labelled) + n, cfg.max_clusters)
        clusters = cluster_embeddings(x, x[:0], n_clusters=n_clusters, seed=seed_int(rng))[0]
        typical = typicality(x, clusters, k=cfg.k, max_reference=cfg.max_reference, seed=seed_int(rng))
        size = np.bincount(clusters, minlength=n_clusters)
        covered = np.bincount(clusters[len(pool):], minlength=n_clusters)         # labelled members per cluster
        score = typical[:len(pool)].copy()                                         # pool rows only are picked
        free = np.ones(len(pool), dtype=bool)
        has_free = np.bincount(clusters[:len(pool)], minlength=n_clusters) > 0
        picks, explanation = [], []
        for order in range(n):
            candidates = np.flatnonzero(has_free)
            c = candidates[np.lexsort((candidates, -size[candidates], covered[candidates]))[0]]
            members = np.flatnonzero(free & (clusters[:len(pool)] == c))
            p = int(members[np.lexsort((members, -score[members]))[0]])
            explanation.append({"index": int(pool[p]), "order": order, "rank": order + 1, "score": float(score[p]),
                                "typicality": float(score[p]), "cluster": int(c), "cluster_size": int(size[c]),
                                "cluster_covered_before": int(covered[c]), "clusters": int(n_clusters),
                                "k": cfg.k})
            picks.append(p)
            free[p] = False
            covered[c] += 1
            has_free[c] = bool(free[members].any())
        return Selection(self.name, pool[np.asarray(picks, dtype=np.int64)], score, explanation, self.params())


def _ball_graph(x: np.ndarray, max_degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``max_degree`` nearest rows by cosine distance, itself included: (dist (n, k), nbr (n, k))."""
    k = min(max_degree, len(x))
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(x)
    dist, nbr = nn.kneighbors(x)
    return np.maximum(dist, 0.0), nbr


def purity_delta(dist: np.ndarray, nbr: np.ndarray, pseudo: np.ndarray, *, purity: float,
                 candidates: np.ndarray) -> tuple[float, float]:
    """ProbCover's delta: the largest candidate radius at which at least ``purity`` of the balls
    (each row's neighbours closer than delta, from the kNN graph) hold one pseudo-label only.

    dist, nbr: (n, k) sorted kNN distances and rows; pseudo: (n,) k-means labels; candidates:
    increasing radii. Returns (delta, purity at delta); the smallest candidate when none qualifies.

    A ball of radius r is pure iff r <= the distance of the row's nearest differently-labelled row.
    When the graph keeps fewer than all rows (k < n), it shows that distance only up to the row's k-th
    neighbour: a row whose k neighbours all share its label is certified pure up to that distance,
    not beyond, since the rows past it are unseen. (Counting such balls as pure at any radius let
    delta grow until most balls overflowed the graph and their gains tied at k.)
    """
    same = pseudo[nbr] == pseudo[:, None]                                          # (n, k)
    first_other = np.where(~same, dist, np.inf).min(axis=1)                        # (n,), inf: none seen
    if nbr.shape[1] < len(pseudo):
        first_other = np.minimum(first_other, dist[:, -1])
    best = (float(candidates[0]), float(np.mean(first_other >= candidates[0])))
    for r in candidates:
        share = float(np.mean(first_other >= r))
        if share >= purity:
            best = (float(r), share)
    return best


@dataclass(frozen=True)
class ProbcoverConfig:
    """purity: share of pure balls that fixes delta (0.95, as in the paper); delta: a fixed radius
    instead (cosine distance), None to choose it by purity; pseudo_clusters: k-means clusters of the
    pseudo-labelling (None: |L| + n, capped at max_clusters); max_degree: neighbours kept per row in
    the kNN graph (bounds memory at n x max_degree; a ball never holds more); radii: candidate radii
    tried for delta (quantiles of the kNN distances)."""

    purity: float = 0.95
    delta: float | None = None
    pseudo_clusters: int | None = None
    max_clusters: int = 1000
    max_degree: int = 64
    radii: int = 40

    def __post_init__(self) -> None:
        ok = (0 < self.purity <= 1 and (self.delta is None or 0 < self.delta <= 2) and self.max_clusters >= 1
              and (self.pseudo_clusters is None or self.pseudo_clusters >= 1) and self.max_degree >= 2
              and self.radii >= 1)
        if not ok:
            raise ValueError(f"ProbcoverConfig: need 0 < purity <= 1, 0 < delta <= 2 or None, positive cluster "
                             f"counts, max_degree >= 2, radii >= 1; got {self}")


class ProbcoverStrategy(ConfiguredStrategy):
    """ProbCover (Yehuda et al., NeurIPS 2022): greedy max coverage of delta-balls around pool rows.

    Once every row is covered, the remaining picks are uniformly random (as in the paper).
    Scores: the number of still-uncovered rows each pool row's ball held before the batch.
    """

    name = "probcover"
    config_class = ProbcoverConfig
    config: ProbcoverConfig
    single_threaded_blas = True

    def _query(self, outputs, pool, labelled, n, rng):
        cfg = self.config
        m = len(pool)
        x = fused_means(outputs, np.concatenate([pool, labelled]))                # (m + l, d), pool first
        dist, nbr = _ball_graph(x, cfg.max_degree)
        if cfg.delta is None:
            k_pseudo = min(len(x), cfg.pseudo_clusters or min(len(labelled) + n, cfg.max_clusters))
            pseudo = cluster_embeddings(x, x[:0], n_clusters=k_pseudo, seed=seed_int(rng))[0]
            radii = np.unique(np.quantile(dist[:, 1:], np.linspace(0.01, 0.99, cfg.radii)))
            delta, purity = purity_delta(dist, nbr, pseudo, purity=cfg.purity, candidates=radii)
        else:
            k_pseudo, delta, purity = None, float(cfg.delta), None
        inside = dist < delta                                                      # (N, k); self included
        rows = np.repeat(np.arange(len(x)), inside.sum(axis=1))
        ball = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, nbr[inside])), shape=(len(x),) * 2)
        holders = ball.T.tocsr()                                                   # j -> rows whose ball holds j
        covered = np.zeros(len(x), dtype=bool)
        covered[np.unique(ball[m:].indices)] = True                                # covered by labelled rows
        gain = np.asarray(ball[:m] @ (~covered).astype(np.int32)).ravel().astype(np.int64)   # (m,)
        scores = gain.astype(np.float64)
        free = np.ones(m, dtype=bool)
        picks, explanation = [], []
        for order in range(n):
            fallback = int(gain[free].max()) == 0
            if fallback:
                p = int(rng.choice(np.flatnonzero(free)))
            else:  # ties broken at random, not by pool order (near-duplicates often sit side by side)
                p = int(rng.choice(np.flatnonzero(free & (gain == gain[free].max()))))
            explanation.append({"index": int(pool[p]), "order": order, "rank": order + 1, "score": float(gain[p]),
                                "newly_covered": int(gain[p]), "ball_size": int(ball.indptr[p + 1] - ball.indptr[p]),
                                "covered_before": float(covered.mean()), "delta": delta,
                                "ball_purity": purity, "pseudo_clusters": k_pseudo, "all_covered_random": fallback})
            picks.append(p)
            free[p] = False
            new = ball.indices[ball.indptr[p]:ball.indptr[p + 1]]
            new = new[~covered[new]]
            covered[new] = True
            gain -= np.bincount(holders[new].indices, minlength=len(x))[:m]        # their holders lose them
        return Selection(self.name, pool[np.asarray(picks, dtype=np.int64)], scores, explanation, self.params())
