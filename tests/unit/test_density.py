"""Unit tests of learner.selection.density: allocation, greedy regulariser, density, core-set."""
from __future__ import annotations

import numpy as np
import pytest

from learner.outputs import InferenceOutputs
from learner.selection import InformativenessWeights, get_strategy
from learner.selection.density import (
    cluster_coverage, cluster_embeddings, cluster_weights, greedy_coreset, greedy_select, largest_remainder,
    max_similarity, semantic_density,
)


def _blobs(sizes, d=4, noise=0.02, seed=0):
    """Tight unit-norm blobs around the first len(sizes) axes; returns (x, labels)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = np.eye(d, dtype=np.float32)[labels] + noise * rng.standard_normal((len(labels), d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_allocation_spreads_a_batch_that_top_n_would_pile_into_one_dense_cluster():
    x, labels = _blobs([40, 10, 10])
    rng = np.random.default_rng(1)
    info = np.where(labels == 0, rng.uniform(0.9, 1.0, 60), rng.uniform(0.5, 0.7, 60))
    n = 6
    assert set(labels[np.argsort(-info)[:n]]) == {0}                              # plain top-n: one cluster
    coverage = np.zeros(3)
    budget = largest_remainder(cluster_weights(info, labels, coverage, gamma=0.5), np.bincount(labels), n)
    assert budget.sum() == n and budget[0] > budget[1] >= 1 and budget[2] >= 1    # dense cluster still leads
    picks, _, _ = greedy_select(x, info, labels, budget, np.zeros(60), lam=0.5)
    assert len(set(picks.tolist())) == n
    assert set(labels[picks]) == {0, 1, 2}


def test_similarity_regulariser_avoids_near_duplicates_inside_a_cluster():
    x, sub = _blobs([20, 20], d=4, noise=0.01)
    x = x + np.array([0, 0, 1, 0], np.float32)                                     # one cluster, two sub-blobs
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    info = np.where(sub == 0, 0.95, 0.6) + np.linspace(0, 0.01, 40)
    one_cluster, budget = np.zeros(40, dtype=np.int64), np.array([4])
    plain, _, _ = greedy_select(x, info, one_cluster, budget, np.zeros(40), lam=0.0)
    regular, _, penalty = greedy_select(x, info, one_cluster, budget, np.zeros(40), lam=1.0)
    assert set(sub[plain]) == {0}
    assert set(sub[regular]) == {0, 1}
    assert penalty[0] == 0 and np.all(penalty[1:] > 0)


def test_greedy_penalty_counts_similarity_to_the_labelled_set():
    """Position 1 is the most informative but duplicates a labelled pair; position 2, a little less
    informative and unlike anything labelled, must win its cluster."""
    e = np.eye(4, dtype=np.float32)
    x = np.stack([e[0] + e[1] * 0.5, e[0], e[1], e[1] + e[2] * 0.5,               # cluster 0
                  e[3], e[3] + e[2] * 0.1, e[3] + e[2] * 0.2, e[3] + e[2] * 0.3])  # cluster 1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labelled = (e[0] + 0.01 * e[2])[None] / np.linalg.norm(e[0] + 0.01 * e[2])
    info = np.array([0.1, 0.9, 0.85, 0.1, 0.2, 0.7, 0.3, 0.1])
    clusters, budget = np.repeat([0, 1], 4), np.array([1, 1])
    sim_l = max_similarity(x, labelled)
    assert sim_l[1] > 0.99 and sim_l[2] == 0
    unaware, _, _ = greedy_select(x, info, clusters, budget, np.zeros(8), lam=0.5)
    np.testing.assert_array_equal(unaware, [1, 5])                                  # premise: 1 wins on I alone
    picks, value, penalty = greedy_select(x, info, clusters, budget, sim_l, lam=0.5)
    np.testing.assert_array_equal(picks, [2, 5])
    np.testing.assert_allclose(penalty, sim_l[[2, 5]])
    np.testing.assert_allclose(value, info[[2, 5]] - 0.5 * sim_l[[2, 5]])


def test_ascmr_spreads_where_entropy_piles_into_the_uncertain_cluster():
    x, labels = _blobs([30, 15, 15], d=6, noise=0.05)
    n, c = len(labels), 3
    probs = np.where(labels[:, None] == 0, 0.5, 0.02) + np.linspace(0, 0.01, n)[:, None]
    probs = np.repeat(probs, c, axis=1).astype(np.float32)
    outputs = InferenceOutputs(
        mu_image=x, mu_text=x.copy(), var_image=np.full_like(x, 0.01), var_text=np.full_like(x, 0.01),
        probs_image=probs, probs_text=probs.copy(), mc_probs_image=probs[:, None].repeat(2, 1),
        mc_probs_text=probs[:, None].repeat(2, 1), match_a=5.0, match_b=2.0)
    pool, labelled = np.arange(n), np.zeros(0, dtype=np.int64)
    entropy = get_strategy("entropy").query(outputs, pool, labelled, 6)
    assert set(labels[entropy.indices]) == {0}
    only_entropy = InformativenessWeights(spread=0, entropy=1, mutual_information=0, match=0, disagreement=0, density=0)
    ascmr = get_strategy("ascmr", weights=only_entropy, n_clusters=3).query(outputs, pool, labelled, 6)
    assert set(labels[ascmr.indices]) == {0, 1, 2}
    assert sum(labels[ascmr.indices] == 0) >= 3                                    # most go where I is high


@pytest.mark.parametrize("seed", range(5))
def test_largest_remainder_sums_to_n_within_capacity(seed):
    rng = np.random.default_rng(seed)
    weights = rng.random(12) * (rng.random(12) > 0.3)
    capacity = rng.integers(0, 9, 12)
    n = int(rng.integers(1, capacity.sum() + 1))
    shares = largest_remainder(weights, capacity, n)
    assert shares.sum() == n
    assert np.all(shares >= 0) and np.all(shares <= capacity)


def test_largest_remainder_rounds_and_redistributes_the_capped_excess():
    np.testing.assert_array_equal(largest_remainder(np.array([1.0, 1.0, 2.0]), np.array([9, 9, 9]), 4), [1, 1, 2])
    np.testing.assert_array_equal(largest_remainder(np.array([1.0, 1.0, 2.0]), np.array([9, 9, 1]), 4), [2, 1, 1])
    np.testing.assert_array_equal(largest_remainder(np.array([0.0, 1.0]), np.array([5, 2]), 4), [2, 2])
    with pytest.raises(ValueError, match="capacity"):
        largest_remainder(np.ones(2), np.array([1, 1]), 3)


def test_labelled_coverage_lowers_a_clusters_share():
    x, labels = _blobs([20, 20])
    info = np.full(40, 0.5)
    capacity = np.bincount(labels)
    labelled = x[:3] + 0.001                                                       # next to cluster 0
    labelled /= np.linalg.norm(labelled, axis=1, keepdims=True)
    sim = max_similarity(x, labelled)
    assert np.all(sim[:20] > 0.9) and np.all(sim[20:] < 0.2)
    covered = cluster_coverage(sim, labels, n_clusters=2, threshold=0.8)
    np.testing.assert_allclose(covered, [1.0, 0.0])
    half = cluster_coverage(np.where(np.arange(40) < 10, 0.95, 0.0), labels, n_clusters=2, threshold=0.8)
    before = largest_remainder(cluster_weights(info, labels, np.zeros(2), gamma=1.0), capacity, 8)
    after = largest_remainder(cluster_weights(info, labels, half, gamma=1.0), capacity, 8)
    np.testing.assert_array_equal(before, [4, 4])
    assert after[0] < before[0] and after.sum() == 8
    restricted = max_similarity(x, labelled, x_clusters=labels, ref_clusters=np.zeros(3, dtype=np.int64))
    np.testing.assert_allclose(restricted[:20], sim[:20], rtol=1e-6)
    assert np.all(restricted[20:] == 0)                                            # no labelled pair in cluster 1


def test_semantic_density_is_higher_in_dense_regions_and_excludes_self():
    tight, _ = _blobs([30], noise=0.01, seed=2)
    loose, _ = _blobs([30], noise=0.3, seed=3)
    x = np.concatenate([tight, np.roll(loose, 1, axis=1)])
    rho = semantic_density(x, k=5)
    assert rho[:30].min() > rho[30:].max()
    dup = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)                        # 4 copies of 3 points
    np.testing.assert_allclose(semantic_density(dup, k=3), 1.0, rtol=1e-6)        # self is not a neighbour
    labels = np.repeat(np.arange(2), 30)
    sampled = semantic_density(x, k=5, clusters=labels, max_reference=12, seed=0)
    assert sampled[:30].min() > sampled[30:].max()


def test_semantic_density_does_not_count_an_item_as_its_own_neighbour():
    """Cosines 0.8 (x0, x1), 0.6 (x0, x2), 0 (x1, x2): each item's own similarity 1 is left out."""
    x = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, -0.8]], dtype=np.float32)
    np.testing.assert_allclose(semantic_density(x, k=1), [0.8, 0.8, 0.6], rtol=1e-6)
    np.testing.assert_allclose(semantic_density(x, k=2), [0.7, 0.4, 0.3], rtol=1e-6, atol=1e-7)
    angles = np.arange(40) * 0.05                                                  # adjacent items: cos(0.05)
    arc = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    sampled = semantic_density(arc, k=1, clusters=np.zeros(40, dtype=np.int64), max_reference=10, seed=0)
    assert sampled.max() <= np.cos(0.05) + 1e-6                                    # never 1: itself among references


def test_cluster_embeddings_recovers_separated_blobs():
    x, labels = _blobs([25, 25, 25])
    found, other = cluster_embeddings(x, x[[0, 30, 60]], n_clusters=3, seed=0)
    for c in range(3):
        assert len(set(found[labels == c])) == 1
    np.testing.assert_array_equal(other, found[[0, 30, 60]])


def test_greedy_coreset_picks_far_distinct_points_outside_the_labelled_set():
    x, labels = _blobs([10, 10, 10])
    pool, labelled = np.arange(5, 30), np.arange(5)                                # cluster 0 partly labelled
    picks = greedy_coreset(x, pool, labelled, 3)
    assert len(set(picks.tolist())) == 3 and set(picks) <= set(pool.tolist())
    assert set(labels[picks[:2]]) == {1, 2}                                        # far from the labelled blob
    no_labels = greedy_coreset(x, np.arange(30), np.zeros(0, dtype=np.int64), 3)
    assert set(labels[no_labels]) == {0, 1, 2}
