"""Density-aware budget allocation (ASCMR §3.3, designed by us; DESIGN.md §5) and k-center greedy.

Pure functions of L2-normalised embeddings (for ASCMR the fused joint means mu_z), so that a dot
product is a cosine similarity:

1. :func:`semantic_density` - rho_i, the mean similarity to the k nearest pool neighbours.
2. :func:`cluster_embeddings` - MiniBatchKMeans partition of the pool (Sculley 2010).
3. :func:`max_similarity`, :func:`cluster_coverage`, :func:`cluster_weights`,
   :func:`largest_remainder` - per-cluster budget proportional to
   (sum_{i in c} I_i)^gamma * (1 - coverage_c), rounded to integers that sum to n.
4. :func:`greedy_select` - inside each cluster, argmax_i I_i - lambda * max_{j in S u L} sim(i, j).

:func:`greedy_coreset` is the k-center greedy baseline (Sener & Savarese, ICLR 2018, Alg. 1).
kNN goes through ``learner.selection.knn`` (faiss from 50k query rows when installed, else
scikit-learn), clustering through scikit-learn; nothing here is hand-rolled.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min

from learner.selection.knn import cosine_neighbours, nearest_centre, nearest_cosine


def cluster_members(labels: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Row positions holding each label value 0..n_groups-1 (ascending positions; may be empty)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=n_groups))
    return np.split(order, bounds[:-1])


def semantic_density(x: np.ndarray, *, k: int = 10, clusters: np.ndarray | None = None,
                     max_reference: int | None = None, seed: int = 0) -> np.ndarray:
    """Semantic density rho_i: mean cosine similarity of x_i to its k nearest neighbours (ASCMR §3.3).

    x: (n, d) L2-normalised.  Returns (n,) float64; 0 for an item with no neighbour.

    Exact when ``clusters`` and ``max_reference`` are None (brute-force scikit-learn kNN over
    all n, O(n^2 d)).  For large pools pass ``clusters`` (n,): neighbours are then searched only
    inside the item's cluster, where nearly all true neighbours lie, and with ``max_reference``
    among at most that many seeded-random members of the cluster.  When a cluster of m members is
    sampled down to R references, the k-th neighbour among m - 1 others corresponds on average to
    the (k R / m)-th among R, so k is scaled to max(1, round(k R / m)) to keep rho comparable
    across clusters.  Cost O(n R d).
    """
    n = x.shape[0]
    labels = np.zeros(n, dtype=np.intp) if clusters is None else clusters
    rng = np.random.default_rng(seed)
    rho = np.zeros(n, dtype=np.float64)
    for members in cluster_members(labels, int(labels.max()) + 1 if n else 0):
        m = len(members)
        if m < 2:
            continue
        if max_reference is None or m <= max_reference:
            ref, kc = np.arange(m), min(k, m - 1)
        else:
            ref = np.sort(rng.choice(m, size=max_reference, replace=False))
            kc = max(1, min(k, round(k * max_reference / m)))
        xc = x[members]
        dist, nbr = cosine_neighbours(xc[ref], xc, kc + 1, pass_rows=n)             # (m, kc + 1)
        is_self = ref[nbr] == np.arange(m)[:, None]
        drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), kc)           # self, else farthest
        keep = np.ones(dist.shape, dtype=bool)
        keep[np.arange(m), drop] = False
        rho[members] = 1 - dist[keep].reshape(m, kc).mean(axis=1)
    return rho


def cluster_embeddings(x: np.ndarray, others: np.ndarray, *, n_clusters: int, seed: int = 0,
                       fit_size: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Partition x into n_clusters with MiniBatchKMeans (Sculley 2010) and assign ``others`` too.

    x: (n, d) pool embeddings; others: (m, d) e.g. labelled embeddings (m may be 0).
    The centres are :func:`kmeans_centres`; every row is then assigned to its nearest centroid
    (``knn.nearest_centre``), O(n n_clusters d).
    Returns (pool labels (n,), other labels (m,)), int64 in [0, n_clusters).
    """
    centres = kmeans_centres(x, n_clusters=n_clusters, seed=seed, fit_size=fit_size)

    def assign(rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64)
        return nearest_centre(rows, centres)

    return assign(x), assign(others)


def kmeans_centres(x: np.ndarray, *, n_clusters: int, seed: int = 0, fit_size: int = 20_000) -> np.ndarray:
    """(n_clusters, d) MiniBatchKMeans centres (k-means++ initialisation) of x (n, d), fitted in float64 on a
    seeded random subsample of max(fit_size, 40 n_clusters) rows (capped at n), in x's dtype."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    size = min(n, max(fit_size, 40 * n_clusters))
    sample = x if size == n else x[np.sort(rng.choice(n, size=size, replace=False))]
    model = MiniBatchKMeans(n_clusters=n_clusters, batch_size=2048, n_init=1, max_iter=20,
                            max_no_improvement=5, random_state=seed).fit(sample.astype(np.float64))
    return model.cluster_centers_.astype(x.dtype)


def max_similarity(x: np.ndarray, ref: np.ndarray, *, x_clusters: np.ndarray | None = None,
                   ref_clusters: np.ndarray | None = None) -> np.ndarray:
    """max(0, max_j cos(x_i, ref_j)) for each row of x: (n, d), (m, d) -> (n,) float64.

    0 when ref is empty, and negative similarities carry no penalty.  With cluster labels the
    maximum runs only over ref rows in x_i's cluster (O(n m d / K) instead of O(n m d)).
    """
    out = np.zeros(x.shape[0], dtype=np.float64)
    if len(ref) == 0:
        return out
    if x_clusters is None or ref_clusters is None:
        pairs = [(np.arange(x.shape[0]), np.arange(len(ref)))]
    else:
        n_clusters = int(max(x_clusters.max(), ref_clusters.max())) + 1
        pairs = zip(cluster_members(x_clusters, n_clusters), cluster_members(ref_clusters, n_clusters))
    for xi, ri in pairs:
        if len(xi) and len(ri):
            out[xi] = np.maximum(1 - nearest_cosine(x[xi], ref[ri], pass_rows=x.shape[0]), 0)
    return out


def cluster_coverage(max_sim_labelled: np.ndarray, clusters: np.ndarray, *, n_clusters: int,
                     threshold: float) -> np.ndarray:
    """coverage_c: fraction of cluster c's members whose max similarity to a labelled pair exceeds
    ``threshold`` (DESIGN §5 step 3).  (n,), (n,) -> (n_clusters,); 0 for an empty cluster."""
    size = np.bincount(clusters, minlength=n_clusters)
    covered = np.bincount(clusters, weights=max_sim_labelled > threshold, minlength=n_clusters)
    return np.divide(covered, size, out=np.zeros(n_clusters), where=size > 0)


def cluster_weights(scores: np.ndarray, clusters: np.ndarray, coverage: np.ndarray, *,
                    gamma: float) -> np.ndarray:
    """Budget weight of each cluster: (sum_{i in c} I_i)^gamma * (1 - coverage_c) (DESIGN §5 step 3).

    scores: (n,) informativeness >= 0; clusters: (n,); coverage: (K,).  Returns (K,).
    gamma < 1 flattens the allocation towards small clusters, gamma = 1 is proportional to mass.
    """
    mass = np.bincount(clusters, weights=scores, minlength=len(coverage))
    return np.power(mass, gamma) * (1 - coverage)


def largest_remainder(weights: np.ndarray, capacity: np.ndarray, n: int) -> np.ndarray:
    """Integer shares proportional to ``weights`` that sum to n, each capped at ``capacity``.

    Hamilton's largest-remainder method with water-filling: a cluster whose quota exceeds its
    capacity gets its capacity and the excess is re-divided among the rest in proportion to their
    weights; zero-weight clusters are used only when the positive-weight ones are full (then in
    proportion to their spare capacity).  weights, capacity: (K,); requires sum(capacity) >= n.
    Returns (K,) int64.
    """
    weights = np.asarray(weights, dtype=np.float64)
    capacity = np.asarray(capacity, dtype=np.int64)
    if capacity.sum() < n:
        raise ValueError(f"largest_remainder: total capacity {int(capacity.sum())} < n = {n}")
    shares = np.zeros(len(weights), dtype=np.int64)
    while (left := n - int(shares.sum())) > 0:
        spare = capacity - shares
        w = np.where(spare > 0, weights, 0.0)
        if w.sum() <= 0:
            w = spare.astype(np.float64)
        quota = left * w / w.sum()
        over = quota > spare
        if over.any():
            shares[over] = capacity[over]          # water-fill the capped ones, re-divide the rest
            continue
        base = np.floor(quota).astype(np.int64)
        shares += base
        extra = left - int(base.sum())
        if extra:
            rem = np.where(spare - base > 0, quota - base, -1.0)
            shares[np.argsort(-rem, kind="stable")[:extra]] += 1
    return shares


def greedy_select(x: np.ndarray, scores: np.ndarray, clusters: np.ndarray, budget: np.ndarray,
                  max_sim_init: np.ndarray, *, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Density-regularised greedy selection inside each cluster (DESIGN §5 step 4).

    In cluster c, ``budget[c]`` times: take argmax_i I_i - lam * s_i over unselected members, where
    s_i = max(0, max_{j in S u L} sim(x_i, x_j)); then update s <- max(s, x_c x_new) for the
    cluster's members only, so the total cost is O(sum_c budget_c |c| d) = O(n |c| d).

    x: (n_pool, d) normalised; scores: (n_pool,) I; clusters: (n_pool,); budget: (K,) ints;
    max_sim_init: (n_pool,) s against the labelled set L.
    Returns (positions (n,), score at pick (n,), similarity term s at pick (n,)), cluster by cluster.
    """
    picks, values, penalties = [], [], []
    for members, b in zip(cluster_members(clusters, len(budget)), budget.tolist()):
        if b == 0:
            continue
        xc = x[members]                                                            # (m, d)
        sim = max_sim_init[members]                                                # (m,) copies
        base = scores[members]
        value = np.empty(len(members))
        for _ in range(b):
            np.multiply(sim, -lam, out=value)
            value += base
            j = int(np.argmax(value))
            picks.append(members[j])
            values.append(value[j])
            penalties.append(sim[j])
            base[j] = -np.inf                                                      # taken
            np.maximum(sim, xc @ xc[j], out=sim)
    return np.asarray(picks, dtype=np.int64), np.asarray(values), np.asarray(penalties)


def k_center_greedy(x: np.ndarray, pool_idx: np.ndarray, labelled_idx: np.ndarray,
                    n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-center greedy (Sener & Savarese, ICLR 2018, Alg. 1) with the distance at each pick.

    x: (N, d); pool_idx, labelled_idx: row indices into x.  Repeatedly takes the pool row farthest
    (Euclidean) from its nearest centre, the centres being the labelled rows and the rows picked so
    far; without labelled rows the pool mean is the initial (virtual) centre.  Cost
    O(N_pool |L| d + n N_pool d).  Returns rows (n,) into x in pick order, the distance of each to
    its nearest centre when picked (n,), and every pool row's distance to its nearest centre after
    the batch (N_pool,; 0 for picked rows).
    """
    xp = x[pool_idx]                                                               # (m, d)
    sq = np.einsum("nd,nd->n", xp, xp).astype(np.float64)                          # (m,)
    if len(labelled_idx):
        _, dist = pairwise_distances_argmin_min(xp, x[labelled_idx])
        min_d2 = np.square(dist, dtype=np.float64)
    else:
        min_d2 = np.square(xp - xp.mean(axis=0)).sum(axis=1, dtype=np.float64)
    picks, at_pick = [], []
    for _ in range(n):
        j = int(np.argmax(min_d2))
        picks.append(j)
        at_pick.append(np.sqrt(max(min_d2[j], 0.0)))
        d2 = sq + sq[j] - 2 * (xp @ xp[j])                                         # (m,)
        np.minimum(min_d2, d2, out=min_d2)
        min_d2[j] = -np.inf                                                        # picked: never again
    remaining = np.sqrt(np.maximum(min_d2, 0.0))
    return pool_idx[np.asarray(picks, dtype=np.int64)], np.asarray(at_pick), remaining


def greedy_coreset(x: np.ndarray, pool_idx: np.ndarray, labelled_idx: np.ndarray, n: int) -> np.ndarray:
    """k-center greedy core-set (Sener & Savarese 2018): (n,) rows of x, see :func:`k_center_greedy`."""
    return k_center_greedy(x, pool_idx, labelled_idx, n)[0]
