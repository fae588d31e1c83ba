"""Baseline query strategies, each a thin class over the scoring and density functions.

- ``random``; ``entropy`` (joint predictive entropy); ``bald`` (Houlsby et al. 2011 with MC
  dropout, Gal et al. 2017); ``coreset`` (k-center greedy, Sener & Savarese 2018); ``badge``
  (Ash et al., ICLR 2020); ``inter`` (lowest mu_v . mu_t, the ASCMR baseline).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import kmeans_plusplus

from learner.selection.base import ConfiguredStrategy, QueryStrategy, Selection, seed_int
from learner.selection.density import k_center_greedy
from learner.selection.scoring import CHUNK_ROWS, bernoulli_entropy, fused_means, mc_entropy_and_mutual_information


def _per_row(rows: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply fn(row chunk) -> (len(chunk),) over rows in chunks; (len(rows),) float64."""
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), CHUNK_ROWS):
        out[start:start + CHUNK_ROWS] = fn(rows[start:start + CHUNK_ROWS])
    return out


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
        for start in range(0, len(pool), CHUNK_ROWS):
            s = slice(start, start + CHUNK_ROWS)
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


class BadgeStrategy(ConfiguredStrategy):
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings.

    The classifier is one linear layer on the common space, so with multi-label BCE and the
    pseudo-label y = round(p) the gradient of the loss w.r.t. its weights is (p - y) outer mu, a
    (C d)-vector; p averages the two branches and mu is the fused joint mean mu_z.
    """

    name = "badge"
    config_class = BadgeConfig
    config: BadgeConfig

    def _query(self, outputs, pool, labelled, n, rng):
        def residual(rows):                                                       # (m, C)
            p = (outputs.probs_image[rows] + outputs.probs_text[rows]) / 2
            return (p - np.round(p)).astype(np.float32)

        norm = _per_row(pool, lambda r: np.linalg.norm(residual(r), axis=1))      # = ||g|| as ||mu_z|| = 1
        size = min(len(pool), max(self.config.max_candidates, n))
        cand = np.arange(len(pool)) if size == len(pool) else np.sort(rng.choice(len(pool), size, replace=False))
        mu = fused_means(outputs, pool[cand])                                     # (m, d)
        grad = (residual(pool[cand])[:, :, None] * mu[:, None, :]).reshape(len(cand), -1)   # (m, C d)
        _, seeds = kmeans_plusplus(grad, n_clusters=n, random_state=seed_int(rng))
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
