"""``learner.selection.knn``: the faiss and scikit-learn back ends find the same neighbours."""
from __future__ import annotations

import numpy as np
import pytest

from learner.selection import knn

pytestmark = pytest.mark.skipif(not knn.HAVE_FAISS, reason="faiss not installed (pip install 'pairlab[scale]')")


@pytest.fixture()
def points():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 16)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), rng.standard_normal((40, 16)).astype(np.float32)


@pytest.mark.parametrize("backend_rows", [0, 10**9])  # sklearn, then faiss via the pass size
def test_both_back_ends_agree_with_brute_force(points, backend_rows, monkeypatch):
    x, centres = points
    ref = x[:200]
    monkeypatch.setattr(knn, "FAISS_MIN_ROWS", 1 if backend_rows else 10**9)
    sims = x @ ref.T                                                                # (600, 200) exact cosines
    dist, ids = knn.cosine_neighbours(ref, x, 5)
    np.testing.assert_array_equal(ids[:, 0], np.argmax(sims, axis=1))
    np.testing.assert_allclose(dist, 1 - np.sort(sims, axis=1)[:, ::-1][:, :5], atol=1e-5)
    np.testing.assert_allclose(knn.nearest_cosine(x, ref), 1 - sims.max(axis=1), atol=1e-5)
    euclid = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(knn.nearest_centre(x, centres), np.argmin(euclid, axis=1))


def test_the_pass_size_picks_the_back_end(monkeypatch):
    calls = []
    real = knn._flat_search
    monkeypatch.setattr(knn, "_flat_search", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = np.eye(4, dtype=np.float32)
    knn.nearest_cosine(x, x)
    assert calls == []
    knn.nearest_cosine(x, x, pass_rows=knn.FAISS_MIN_ROWS)
    assert calls == [1]
