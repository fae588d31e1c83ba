"""The first batch, before any model exists (DESIGN §5): k-means on the raw encoder features."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min
from sklearn.preprocessing import StandardScaler

from learner.selection.base import Selection, validate_query


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
