"""Scoring a pool whose inference outputs arrive batch by batch (``learner.inference.iter_infer``).

``stream_pool_scores`` keeps only what ``ascmr`` needs of every pool pair - the informativeness
components (n_pool,) and the fused mean mu_z (n_pool, d) - and drops each batch's outputs (the (B, K, C)
Monte-Carlo probabilities above all) once scored, so memory is O(n_pool d + B K C) rather than
O(n_pool K C). The match noise is drawn once from ``rng`` exactly as ``pool_scores`` draws it, so
``AscmrStrategy.query_scored`` on the result equals ``AscmrStrategy.query`` on all outputs at once.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from learner.outputs import InferenceOutputs
from learner.selection.scoring import COMPONENTS, PoolScores, fused_means, match_noise, pool_scores


def stream_pool_scores(batches: Iterable[InferenceOutputs], n_pool: int, *, match_samples: int,
                       rng: np.random.Generator) -> PoolScores:
    """Components and mu_z of ``n_pool`` pairs whose outputs come as consecutive batches, in pool order."""
    comps: dict[str, np.ndarray] = {name: np.empty(n_pool, dtype=np.float64) for name in COMPONENTS}
    mu_z: np.ndarray | None = None
    noise = None
    start = 0
    for batch in batches:
        if noise is None:
            d = batch.mu_image.shape[1]
            noise = match_noise(match_samples, d, seed=rng)
            mu_z = np.empty((n_pool, d), dtype=np.float32)
        scored = pool_scores(batch, np.arange(batch.n), match_samples=match_samples, noise=noise,
                             chunk_size=max(1, batch.n))
        stop = start + batch.n
        for name in COMPONENTS:
            comps[name][start:stop] = scored.components[name]
        mu_z[start:stop] = scored.mu_z
        start = stop
    if start != n_pool:
        raise ValueError(f"stream_pool_scores: the batches held {start} rows, expected {n_pool}")
    return PoolScores(components=comps, mu_z=mu_z if mu_z is not None else np.zeros((0, 0), np.float32))


def stream_fused_means(batches: Iterable[InferenceOutputs]) -> np.ndarray:
    """L2-normalised joint means mu_z (n, d) of consecutive batches of outputs."""
    parts = [fused_means(batch, np.arange(batch.n)) for batch in batches]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
