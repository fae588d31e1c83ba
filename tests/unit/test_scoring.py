"""Unit tests of learner.selection.scoring on small hand-built arrays."""
from __future__ import annotations

import numpy as np
import pytest

from learner.outputs import InferenceOutputs
from learner.selection.scoring import (
    COMPONENTS, InformativenessWeights, bernoulli_entropy, embedding_spread, fuse_gaussians, informativeness,
    match_entropy, match_noise, match_probability, mc_entropy_and_mutual_information, pool_scores, rank01,
    semantic_disagreement,
)


def _pairs_at_distances(distances, d=8, var=1e-4):
    """Image means e_0; text means on the unit circle at the given chord distances from e_0."""
    n = len(distances)
    angles = 2 * np.arcsin(np.asarray(distances) / 2)
    mu_v = np.zeros((n, d), np.float32)
    mu_v[:, 0] = 1
    mu_t = np.zeros((n, d), np.float32)
    mu_t[:, 0], mu_t[:, 1] = np.cos(angles), np.sin(angles)
    var_ = np.full((n, d), var, np.float32)
    return mu_v, var_, mu_t, var_.copy()


def test_identical_gaussians_have_the_lowest_match_uncertainty():
    mu_v, var_v, mu_t, var_t = _pairs_at_distances([0.0, 0.3, 0.5, 0.7])
    noise_v, noise_t = match_noise(7, 8, seed=0)
    p = match_probability(mu_v, var_v, mu_t, var_t, a=10.0, b=5.0, noise_image=noise_v, noise_text=noise_t)
    h = match_entropy(p)
    assert np.argmax(p) == 0 and p[0] > 0.99
    assert np.argmin(h) == 0
    assert np.argmax(h) == 2                      # ||mu_v - mu_t|| = b / a: p_match = 0.5
    assert p[2] == pytest.approx(0.5, abs=0.05)


def test_match_probability_equals_the_k_by_k_monte_carlo_average():
    rng = np.random.default_rng(0)
    mu_v, mu_t = rng.standard_normal((2, 5, 6)).astype(np.float32)
    var_v, var_t = rng.uniform(0.01, 0.2, (2, 5, 6)).astype(np.float32)
    noise_v, noise_t = match_noise(3, 6, seed=1)
    p = match_probability(mu_v, var_v, mu_t, var_t, a=2.0, b=1.0, noise_image=noise_v, noise_text=noise_t)
    z_v = mu_v[:, None] + np.sqrt(var_v[:, None]) * noise_v[None]                 # (n, K, d)
    z_t = mu_t[:, None] + np.sqrt(var_t[:, None]) * noise_t[None]
    dist = np.linalg.norm(z_v[:, :, None] - z_t[:, None, :], axis=-1)              # (n, K, K)
    expected = (1 / (1 + np.exp(2.0 * dist - 1.0))).mean(axis=(1, 2))
    np.testing.assert_allclose(p, expected, rtol=1e-4)


def test_larger_variance_gives_larger_spread():
    var = np.array([[0.1, 0.1], [0.2, 0.4], [1.0, 1.0]], np.float32)
    spread = embedding_spread(var)
    np.testing.assert_allclose(spread, [0.1, 0.3, 1.0], rtol=1e-6)
    assert np.all(np.diff(spread) > 0)


def test_js_divergence_is_zero_for_identical_branches_and_positive_otherwise():
    p = np.array([[0.2, 0.7, 0.5], [0.9, 0.1, 0.4]], np.float32)
    q = np.array([[0.2, 0.7, 0.5], [0.1, 0.9, 0.4]], np.float32)
    js = semantic_disagreement(p, q)
    assert js[0] == pytest.approx(0.0, abs=1e-6)
    assert js[1] > 0.3
    np.testing.assert_allclose(semantic_disagreement(q, p), js, atol=1e-7)         # symmetric
    assert js.max() <= 3 * np.log(2)


def test_entropy_is_maximal_at_one_half_and_symmetric():
    probs = np.array([[0.1], [0.3], [0.5], [0.7], [0.9], [0.0]], np.float32)
    h = bernoulli_entropy(probs)
    assert np.argmax(h) == 2 and h[2] == pytest.approx(np.log(2), rel=1e-6)
    assert h[0] == pytest.approx(h[4], rel=1e-5) and h[1] == pytest.approx(h[3], rel=1e-5)
    assert 0 <= h[5] < 1e-4                                                        # p = 0 is finite


def test_mutual_information_is_zero_for_agreeing_samples_and_positive_otherwise():
    agree = np.full((1, 4, 2), 0.3, np.float32)
    disagree = np.array([[[0.1, 0.5], [0.9, 0.5]]], np.float32)                    # (1, K=2, C=2)
    ent, mi = mc_entropy_and_mutual_information(np.concatenate([agree[:, :2], disagree]))
    assert mi[0] == pytest.approx(0.0, abs=1e-6)
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))                       # noqa: E731
    assert ent[1] == pytest.approx(2 * np.log(2), rel=1e-5)                        # mean p = 0.5, 0.5
    assert mi[1] == pytest.approx(h(0.5) - h(0.1), rel=1e-4)


def test_fused_gaussian_matches_the_hand_computed_1d_product():
    mu_v, var_v = np.array([[2.0]]), np.array([[1.0]])
    mu_t, var_t = np.array([[6.0]]), np.array([[3.0]])
    mu_z, var_z = fuse_gaussians(mu_v, var_v, mu_t, var_t, normalise=False)
    assert var_z[0, 0] == pytest.approx(1 / (1 / 1.0 + 1 / 3.0))                   # 0.75
    assert mu_z[0, 0] == pytest.approx(0.75 * (2.0 / 1.0 + 6.0 / 3.0))             # 3.0
    mu_n, _ = fuse_gaussians(np.array([[3.0, 0.0]]), np.ones((1, 2)), np.array([[0.0, 4.0]]), np.ones((1, 2)))
    np.testing.assert_allclose(mu_n, [[0.6, 0.8]])                                 # L2-normalised


def test_rank01_maps_to_unit_interval_with_shared_ties():
    np.testing.assert_allclose(rank01(np.array([3.0, 1.0, 2.0])), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(rank01(np.array([1.0, 1.0, 2.0])), [0.25, 0.25, 1.0])
    np.testing.assert_allclose(rank01(np.full(4, 7.0)), 0.5)
    np.testing.assert_allclose(rank01(np.array([5.0])), [0.5])
    with pytest.raises(ValueError, match="finite"):
        rank01(np.array([1.0, np.nan]))


def test_informativeness_is_a_weighted_mean_of_ranks():
    comps = {name: np.array([0.0, 1.0, 2.0]) for name in COMPONENTS}
    comps["density"] = np.array([2.0, 1.0, 0.0])
    only_density = InformativenessWeights(spread=0, entropy=0, mutual_information=0, match=0,
                                          disagreement=0, density=1)
    np.testing.assert_allclose(informativeness(comps, only_density), [1.0, 0.5, 0.0])
    info = informativeness(comps, InformativenessWeights(density=1))  # match 1 + disagreement 1 + density 1
    np.testing.assert_allclose(info, [1 / 3, 0.5, 2 / 3])
    with pytest.raises(ValueError, match="missing components"):
        informativeness({"spread_image": np.zeros(3)}, InformativenessWeights())
    with pytest.raises(ValueError, match=">= 0"):
        InformativenessWeights(entropy=-1.0)


def test_informativeness_honours_unequal_weights():
    """match_entropy and density rank the items in opposite orders: the heavier weight sets the order."""
    rng = np.random.default_rng(0)
    comps = {name: rng.random(4) for name in COMPONENTS}
    comps["match_entropy"] = np.array([0.1, 0.2, 0.3, 0.4])
    comps["density"] = np.array([4.0, 3.0, 2.0, 1.0])
    off = dict(spread=0, entropy=0, mutual_information=0, match=0, mismatch=0, disagreement=0, density=0)
    match_heavy = informativeness(comps, InformativenessWeights(**{**off, "match": 3, "density": 1}))
    density_heavy = informativeness(comps, InformativenessWeights(**{**off, "match": 1, "density": 3}))
    np.testing.assert_allclose(match_heavy, [3 / 12, 5 / 12, 7 / 12, 9 / 12])     # (3 r_match + r_density) / 4
    np.testing.assert_allclose(density_heavy, [9 / 12, 7 / 12, 5 / 12, 3 / 12])
    assert np.argmax(match_heavy) == 3 and np.argmax(density_heavy) == 0
    weights = InformativenessWeights(**{**off, "match": 3, "density": 1, "entropy": 2})   # 1 each per modality
    expected = (3 * rank01(comps["match_entropy"]) + rank01(comps["density"]) + rank01(comps["entropy_image"])
                + rank01(comps["entropy_text"])) / 6
    np.testing.assert_allclose(informativeness(comps, weights), expected)


def _outputs(n=40, d=6, c=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((2, n, d)).astype(np.float32)
    mu /= np.linalg.norm(mu, axis=2, keepdims=True)
    return InferenceOutputs(
        mu_image=mu[0], mu_text=mu[1], var_image=rng.uniform(0.01, 0.1, (n, d)).astype(np.float32),
        var_text=rng.uniform(0.01, 0.1, (n, d)).astype(np.float32),
        probs_image=rng.random((n, c), dtype=np.float32), probs_text=rng.random((n, c), dtype=np.float32),
        mc_probs_image=rng.random((n, k, c), dtype=np.float32), mc_probs_text=rng.random((n, k, c), dtype=np.float32),
        match_a=4.0, match_b=2.0)


def test_pool_scores_do_not_depend_on_chunking_or_threads():
    outputs = _outputs()
    rows = np.arange(3, 40, 2)
    ref = pool_scores(outputs, rows, seed=3)
    other = pool_scores(outputs, rows, seed=3, chunk_size=4, n_jobs=2)
    assert set(ref.components) == set(COMPONENTS)
    for name in COMPONENTS:
        np.testing.assert_allclose(other.components[name], ref.components[name], rtol=1e-6, err_msg=name)
        assert ref.components[name].shape == (len(rows),)
    np.testing.assert_allclose(np.linalg.norm(ref.mu_z, axis=1), 1, rtol=1e-5)


def test_pool_scores_without_samples_fall_back_to_branch_probabilities():
    o = _outputs(k=0)
    scores = pool_scores(o, np.arange(o.n))
    np.testing.assert_allclose(scores.components["entropy_image"], bernoulli_entropy(o.probs_image), rtol=1e-6)
    assert np.all(scores.components["mutual_information_text"] == 0)
