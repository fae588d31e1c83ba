"""Inter-annotator agreement: Krippendorff's alpha for nominal data (numpy only).

Krippendorff, *Content Analysis: An Introduction to Its Methodology*, 2nd ed. (2004), §11.3; and
"Computing Krippendorff's Alpha-Reliability" (2011). With the coincidence matrix

    o_ck = sum_u (N_uc * N_uk - [c == k] * N_uc) / (m_u - 1)      over units with m_u >= 2 values,

where N_uc counts the coders that gave unit u the value c and m_u = sum_c N_uc, the marginals
n_c = sum_k o_ck and n = sum_c n_c, nominal alpha is

    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c * n_k.

Multi-label annotations are scored one label at a time as binary data (present / absent), which
tolerates any number of annotators per pair and missing annotations.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def krippendorff_alpha_nominal(counts: np.ndarray) -> float:
    """Nominal alpha from value counts per unit.

    counts: (n_units, n_values) non-negative integers; ``counts[u, c]`` is how many coders gave unit
    ``u`` the value ``c``. Units with fewer than two values are not pairable and are ignored.
    Returns ``nan`` when fewer than two pairable values exist or when every value is the same
    (expected disagreement zero: alpha is undefined).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"counts: expected a (n_units, n_values) matrix, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("counts: must be non-negative")
    m = counts.sum(axis=1)  # (n_units,)
    pairable = counts[m >= 2]  # (n_pairable, n_values)
    if len(pairable) == 0:
        return float("nan")
    weights = 1.0 / (pairable.sum(axis=1) - 1.0)  # (n_pairable,)
    coincidence = np.einsum("u,uc,uk->ck", weights, pairable, pairable) - np.diag(weights @ pairable)  # (V, V)
    n_c = coincidence.sum(axis=1)  # (V,)
    n = n_c.sum()
    observed = coincidence.sum() - np.trace(coincidence)
    expected = n_c.sum() ** 2 - (n_c**2).sum()
    if expected <= 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * observed / expected)


@dataclass(frozen=True)
class LabelAgreement:
    """Per-label binary alpha over the units annotated by at least two people."""

    label: str
    alpha: float
    units: int
    positives: int


def label_alphas(votes: Sequence[Sequence[frozenset[str] | set[str]]], labels: Sequence[str]) -> list[LabelAgreement]:
    """Binary alpha per label.

    votes: one entry per unit (pair), each the label sets its annotators chose (one set per annotator).
    labels: the vocabulary to score; labels nobody chose give ``nan`` (no variation).
    """
    units = [unit for unit in votes if len(unit) >= 2]
    out = []
    for label in labels:
        present = np.array([sum(label in chosen for chosen in unit) for unit in units], dtype=np.int64)
        raters = np.array([len(unit) for unit in units], dtype=np.int64)
        counts = np.stack([raters - present, present], axis=1) if units else np.zeros((0, 2))
        out.append(LabelAgreement(label, krippendorff_alpha_nominal(counts), len(units), int(present.sum())))
    return out


def nominal_alpha(values: Sequence[Sequence[str]]) -> float:
    """Alpha for one nominal value per annotator and unit (e.g. the caption verdicts of each pair)."""
    categories = sorted({v for unit in values for v in unit})
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros((len(values), max(len(categories), 1)), dtype=np.int64)
    for u, unit in enumerate(values):
        for v in unit:
            counts[u, index[v]] += 1
    return krippendorff_alpha_nominal(counts)
