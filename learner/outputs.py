"""The learner's inference outputs: the arrays that scoring and selection consume.

Selection code (``learner.selection``) sees only this container, never a torch module,
so every strategy is a pure function of arrays (STYLE habit 1, baal's heuristics).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InferenceOutputs:
    """Model outputs for N pairs (float32 unless noted).

    mu_image, mu_text:          (N, d)    L2-normalised means of the Gaussian embeddings (PCME).
    var_image, var_text:        (N, d)    diagonal variances sigma^2 (> 0).
    probs_image, probs_text:    (N, C)    sigmoid class probabilities of each branch (multi-label).
    mc_probs_image, mc_probs_text: (N, K, C) class probabilities of K samples z ~ N(mu, sigma^2)
                                pushed through the classifier; K may be 0 (shape (N, 0, C)).
    dropout_probs:              (N, K', C) or None: joint class probabilities under MC dropout (BALD).
    match_a, match_b:           scalars of the PCME match probability sigmoid(-a*||z_v - z_t|| + b).
    competence:                 the model's competence in [0, 1] measured by the caller on labelled
                                held-out pairs (``learner.metrics.competence``), or None when unknown;
                                ``ascmr`` mixes coverage and uncertainty by it.
    """

    mu_image: np.ndarray
    mu_text: np.ndarray
    var_image: np.ndarray
    var_text: np.ndarray
    probs_image: np.ndarray
    probs_text: np.ndarray
    mc_probs_image: np.ndarray
    mc_probs_text: np.ndarray
    match_a: float
    match_b: float
    dropout_probs: np.ndarray | None = None
    competence: float | None = None

    def __post_init__(self) -> None:
        n, d = self.mu_image.shape
        for name in ("mu_text", "var_image", "var_text"):
            if getattr(self, name).shape != (n, d):
                raise ValueError(f"InferenceOutputs.{name}: expected shape {(n, d)}, got {getattr(self, name).shape}")
        c = self.probs_image.shape[1]
        if self.probs_image.shape != (n, c) or self.probs_text.shape != (n, c):
            raise ValueError(f"InferenceOutputs.probs_*: expected shape {(n, c)}")
        for name in ("mc_probs_image", "mc_probs_text"):
            arr = getattr(self, name)
            if arr.ndim != 3 or arr.shape[0] != n or arr.shape[2] != c:
                raise ValueError(f"InferenceOutputs.{name}: expected shape (N={n}, K, C={c}), got {arr.shape}")
        if self.competence is not None and not 0.0 <= self.competence <= 1.0:
            raise ValueError(f"InferenceOutputs.competence: expected None or a value in [0, 1], got {self.competence}")

    @property
    def n(self) -> int:
        return self.mu_image.shape[0]

    def take(self, indices: np.ndarray) -> "InferenceOutputs":
        """The outputs of a subset of rows, e.g. the pool."""
        return InferenceOutputs(
            mu_image=self.mu_image[indices], mu_text=self.mu_text[indices],
            var_image=self.var_image[indices], var_text=self.var_text[indices],
            probs_image=self.probs_image[indices], probs_text=self.probs_text[indices],
            mc_probs_image=self.mc_probs_image[indices], mc_probs_text=self.mc_probs_text[indices],
            match_a=self.match_a, match_b=self.match_b,
            dropout_probs=None if self.dropout_probs is None else self.dropout_probs[indices],
            competence=self.competence,
        )
