"""Scoring a pool whose inference outputs arrive batch by batch (``learner.inference.iter_infer``).

Each batch is scored as it is inferred (:func:`batch_pool_scores`), keeping only what ``ascmr`` needs of
every pool pair - the informativeness components (n_pool,) and the fused mean mu_z (n_pool, d) - and
dropping the batch's outputs (the (B, K, C) Monte-Carlo probabilities above all), so memory is
O(n_pool d + B K C) rather than O(n_pool K C); :func:`stream_pool_scores` (in pool order) or
:func:`gather_pool_scores` (any order, from Ray) put the parts together. With the match noise drawn once
from ``rng`` exactly as ``pool_scores`` draws it (``match_noise(match_samples, d, seed=rng)``),
``AscmrStrategy.query_scored`` on the result equals ``AscmrStrategy.query`` on all outputs at once.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from learner.outputs import InferenceOutputs
from learner.selection.scoring import COMPONENTS, PoolScores, fused_means, pool_scores


def stream_pool_scores(parts: Iterable[PoolScores], n_pool: int) -> PoolScores:
    """One ``PoolScores`` of ``n_pool`` pairs from the scores of consecutive batches in pool order
    (:func:`batch_pool_scores` of each batch, e.g. as ``iter_infer``'s ``then`` on its threads)."""

    def placed():
        start = 0
        for part in parts:
            yield np.arange(start, start + len(part.mu_z)), part
            start += len(part.mu_z)

    return gather_pool_scores(placed(), n_pool)


def batch_pool_scores(batch: InferenceOutputs, *, match_samples: int,
                      noise: tuple[np.ndarray, np.ndarray]) -> PoolScores:
    """Components (B,) and mu_z (B, d) of every row of one batch of outputs, with the pool's one draw of
    match ``noise`` (``match_noise``): the unit of work of a pool scored batch by batch (locally or on Ray)."""
    return pool_scores(batch, np.arange(batch.n), match_samples=match_samples, noise=noise,
                       chunk_size=max(1, batch.n))


def gather_pool_scores(parts: Iterable[tuple[np.ndarray, PoolScores]], n_pool: int) -> PoolScores:
    """One ``PoolScores`` of ``n_pool`` pairs from ``(pool positions (B,), scores of those B pairs)`` parts,
    which may come in any order (from Ray actors) but must cover every position exactly once."""
    comps: dict[str, np.ndarray] = {name: np.empty(n_pool, dtype=np.float64) for name in COMPONENTS}
    mu_z: np.ndarray | None = None
    seen = np.zeros(n_pool, dtype=bool)
    for positions, part in parts:
        if mu_z is None:
            mu_z = np.empty((n_pool, part.mu_z.shape[1]), dtype=np.float32)
        if seen[positions].any():
            raise ValueError(f"gather_pool_scores: pool position {int(positions[seen[positions]][0])} scored twice")
        seen[positions] = True
        for name in COMPONENTS:
            comps[name][positions] = part.components[name]
        mu_z[positions] = part.mu_z
    if not seen.all():
        raise ValueError(f"gather_pool_scores: the batches held {int(seen.sum())} rows, expected {n_pool}")
    return PoolScores(components=comps, mu_z=mu_z if mu_z is not None else np.zeros((0, 0), np.float32))


def stream_fused_means(batches: Iterable[InferenceOutputs]) -> np.ndarray:
    """L2-normalised joint means mu_z (n, d) of consecutive batches of outputs."""
    parts = [fused_means(batch, np.arange(batch.n)) for batch in batches]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
