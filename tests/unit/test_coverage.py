"""``typiclust`` and ``probcover`` on hand-built embeddings: typicality picks the dense centre of a
cluster, coverage spreads picks over the clusters, and covered (labelled or queued) rows count."""
from __future__ import annotations

import numpy as np
import pytest

from learner.outputs import InferenceOutputs
from learner.selection import get_strategy
from learner.selection.coverage import purity_delta, typicality

D, C = 6, 3


def outputs_of(x: np.ndarray) -> InferenceOutputs:
    """Outputs whose fused joint mean mu_z is x / ||x|| (same means and variances in both modalities)."""
    n = len(x)
    mu = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    var = np.full((n, D), 0.05, dtype=np.float32)
    probs = np.full((n, C), 0.5, dtype=np.float32)
    return InferenceOutputs(mu_image=mu, mu_text=mu.copy(), var_image=var, var_text=var.copy(), probs_image=probs,
                            probs_text=probs.copy(), mc_probs_image=np.zeros((n, 0, C), np.float32),
                            mc_probs_text=np.zeros((n, 0, C), np.float32), match_a=5.0, match_b=2.5)


def blob(rng, direction: int, size: int, spread: float) -> np.ndarray:
    centre = np.eye(D)[direction]
    return centre + spread * rng.standard_normal((size, D))


def test_typicality_is_highest_at_the_dense_centre_of_a_cluster():
    rng = np.random.default_rng(0)
    x = np.vstack([blob(rng, 0, 12, 0.02), blob(rng, 0, 28, 0.4)])              # dense core, then a sparse halo
    sel = get_strategy("typiclust").query(outputs_of(x), np.arange(len(x)), np.zeros(0, np.int64), 1, seed=0)
    assert sel.indices[0] < 12                                                     # one of the core rows
    assert sel.scores[:12].min() > sel.scores[12:].max()                          # every core row is more typical
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(typicality(xn, np.zeros(len(x), np.int64)), sel.scores)


def test_typiclust_takes_the_largest_uncovered_cluster_and_counts_covered_rows():
    rng = np.random.default_rng(1)
    x = np.vstack([blob(rng, 0, 30, 0.05), blob(rng, 1, 20, 0.05), blob(rng, 2, 10, 0.05)])
    pool, none = np.arange(len(x)), np.zeros(0, np.int64)
    first = get_strategy("typiclust").query(outputs_of(x), pool, none, 3, seed=0)
    assert np.digitize(first.indices, [30, 50]).tolist() == [0, 1, 2]             # blobs by size: 30, 20, 10
    covered = np.array([0, 30])                                                    # e.g. labelled at import, queued
    later = get_strategy("typiclust").query(outputs_of(x), np.setdiff1d(pool, covered), covered, 1, seed=0)
    assert 50 <= later.indices[0] < 60                                            # the only uncovered blob
    entry = later.explanation[0]
    assert {"typicality", "cluster", "cluster_size", "cluster_covered_before", "clusters", "k"} <= set(entry)
    assert entry["cluster_covered_before"] == 0 and entry["clusters"] == 3


def test_probcover_spreads_its_picks_over_the_clusters():
    rng = np.random.default_rng(2)
    x = np.vstack([blob(rng, 0, 30, 0.03), blob(rng, 1, 20, 0.03), blob(rng, 2, 10, 0.03)])
    pool = np.arange(len(x))
    sel = get_strategy("probcover").query(outputs_of(x), pool, np.zeros(0, np.int64), 3, seed=0)
    assert sorted(np.digitize(sel.indices, [30, 50]).tolist()) == [0, 1, 2]       # one per blob
    entry = sel.explanation[0]
    assert {"newly_covered", "ball_size", "covered_before", "delta", "ball_purity", "pseudo_clusters",
            "all_covered_random"} <= set(entry)
    assert entry["ball_purity"] >= 0.95 and entry["newly_covered"] == 30          # delta: pure, whole blob
    assert [e["newly_covered"] for e in sel.explanation] == [30, 20, 10]


def test_probcover_counts_labelled_and_queued_rows_as_covered():
    rng = np.random.default_rng(3)
    x = np.vstack([blob(rng, 0, 30, 0.03), blob(rng, 1, 20, 0.03), blob(rng, 2, 10, 0.03)])
    covered = np.array([5])                                                        # one row of the largest blob
    pool = np.setdiff1d(np.arange(len(x)), covered)
    sel = get_strategy("probcover").query(outputs_of(x), pool, covered, 2, seed=0)
    assert sorted(np.digitize(sel.indices, [30, 50]).tolist()) == [1, 2]
    assert sel.explanation[0]["covered_before"] == pytest.approx(30 / 60)


def test_purity_delta_is_the_largest_radius_with_enough_pure_balls():
    dist = np.array([[0, 0.1, 0.5], [0, 0.1, 0.6], [0, 0.2, 0.5]])
    nbr = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    pseudo = np.array([0, 0, 1])
    # rows 0 and 1 first meet another label at 0.5 and 0.6, row 2 at 0.2
    assert purity_delta(dist, nbr, pseudo, purity=1.0, candidates=np.array([0.1, 0.2, 0.3])) == (0.2, 1.0)
    assert purity_delta(dist, nbr, pseudo, purity=0.6, candidates=np.array([0.1, 0.3, 0.5]))[0] == 0.5


def test_purity_delta_certifies_a_capped_graph_only_up_to_each_rows_last_neighbour():
    # a 2-neighbour graph of 4 rows, one pseudo-label: it shows no other label, but rows past each row's
    # 2nd neighbour are unseen, so row 0's and row 1's balls are pure for sure only up to 0.1, the others' to 0.3
    dist = np.array([[0, 0.1], [0, 0.1], [0, 0.3], [0, 0.3]])
    nbr = np.array([[0, 1], [1, 0], [2, 3], [3, 2]])
    pseudo = np.zeros(4, dtype=np.int64)
    candidates = np.array([0.1, 0.3, 0.9])
    assert purity_delta(dist, nbr, pseudo, purity=1.0, candidates=candidates) == (0.1, 1.0)
    assert purity_delta(dist, nbr, pseudo, purity=0.5, candidates=candidates) == (0.3, 0.5)


def test_probcover_breaks_ties_at_random_not_by_pool_order():
    rng = np.random.default_rng(4)
    x = np.vstack([blob(rng, d, 10, 0.01) for d in range(4)])                    # 4 equal blobs: every gain ties
    pool = np.arange(len(x))
    firsts = set()
    for seed in range(6):
        sel = get_strategy("probcover").query(outputs_of(x), pool, np.zeros(0, np.int64), 4, seed=seed)
        assert sorted(np.digitize(sel.indices, [10, 20, 30]).tolist()) == [0, 1, 2, 3]   # still one per blob
        firsts.add(int(sel.indices[0]))
    assert len(firsts) > 1                                                          # pool order would give row 0 always
