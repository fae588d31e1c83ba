"""Precomputed features: a ``.npy`` matrix given at import, one row per pair; nothing is computed.

Used for benchmark feature files (e.g. the Wikipedia SIFT/LDA features) where the
images and texts themselves are not available. Rows follow the import order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from learner.encoders.base import IMAGE, TEXT, Encoder, atomic_write


@dataclass(frozen=True)
class PrecomputedConfig:
    """Settings of :class:`PrecomputedEncoder`.

    path: the ``.npy`` file holding an ``(N, D)`` float matrix (required).
    """

    path: str

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path: the precomputed encoder needs the .npy features file (path=...)")


def save_features(features: np.ndarray, path: str | Path) -> None:
    """Write an ``(N, D)`` finite matrix as float32 ``.npy``, atomically (temp file + ``os.replace``)."""
    matrix = np.asarray(features)
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise ValueError(f"features: expected a numeric (N, D) matrix, got shape {matrix.shape} {matrix.dtype}")
    matrix = matrix.astype(np.float32, copy=False)
    if not np.isfinite(matrix).all():
        raise ValueError("features: contains NaN or infinite values")
    with atomic_write(path) as fh:
        np.save(fh, matrix)


class PrecomputedEncoder(Encoder):
    """Features read from a ``.npy`` file: :meth:`features` returns the ``(N, D)`` float32 matrix."""

    name = "precomputed"
    modalities = frozenset({IMAGE, TEXT})
    computes = False

    def __init__(self, config: PrecomputedConfig) -> None:
        self._config = config
        path = Path(config.path)
        if not path.is_file():
            raise FileNotFoundError(f"path: {path} does not exist")
        try:
            header = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise ValueError(f"{path}: not a .npy matrix ({exc})") from exc
        if header.ndim != 2 or not np.issubdtype(header.dtype, np.number):
            raise ValueError(f"{path}: expected a numeric (N, D) matrix, got shape {header.shape} {header.dtype}")
        self._shape: tuple[int, int] = (int(header.shape[0]), int(header.shape[1]))

    @property
    def config(self) -> PrecomputedConfig:
        return self._config

    @property
    def dim(self) -> int:
        return self._shape[1]

    @property
    def n(self) -> int:
        """N, the number of rows."""
        return self._shape[0]

    def features(self) -> np.ndarray:
        """The ``(N, D)`` float32 matrix, memory-mapped read-only when the file is float32."""
        matrix = np.load(self._config.path, mmap_mode="r")
        return matrix if matrix.dtype == np.float32 else matrix.astype(np.float32)
