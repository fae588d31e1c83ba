"""A synthetic ``SimulationData`` for the simulate tests: features that derive from the class."""
from __future__ import annotations

import numpy as np

from app.bench.data import SimulationData


def synthetic(n: int = 120, n_test: int = 30, seed: int = 0) -> SimulationData:
    """n pairs (the last n_test in the test split) whose image (16-d) and text (8-d) features both derive
    from their one-hot class (4 classes) plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.eye(4, dtype=np.float32)[rng.integers(4, size=n)]
    image = (labels @ rng.normal(size=(4, 16)) + 0.3 * rng.normal(size=(n, 16))).astype(np.float32)
    text = (labels @ rng.normal(size=(4, 8)) + 0.3 * rng.normal(size=(n, 8))).astype(np.float32)
    split = np.array(["train"] * (n - n_test) + ["test"] * n_test, dtype=object)
    return SimulationData("synthetic", image, text, labels, split, np.array([f"g{i}" for i in range(n)], dtype=object),
                          {"image": "precomputed", "text": "precomputed"})
