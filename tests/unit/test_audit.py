"""The mismatch audit on hand-built arrays (learner.audit)."""
from __future__ import annotations

import numpy as np
import pytest

import torch

from learner.audit import AUDIT_COMPONENTS, AuditConfig, audit_pairs, audit_scores, best_alternatives, breakdown, \
    candidate_rows, clean_probability, pair_clean_probability, cluster_neighbours, contrastive_losses, cross_modal_consistency, \
    gather_audit_inputs, mismatch_posterior, neighbour_consistency, reduce_features, two_populations
from learner.inference import infer, iter_infer
from learner.selection.knn import cosine_neighbours
from learner.model import CrossModalModel
from learner.outputs import InferenceOutputs


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _outputs(mu_image: np.ndarray, mu_text: np.ndarray, probs_image: np.ndarray, probs_text: np.ndarray) -> InferenceOutputs:
    n, d = mu_image.shape
    c = probs_image.shape[1]
    var = np.full((n, d), 0.01, dtype=np.float32)
    return InferenceOutputs(mu_image=mu_image, mu_text=mu_text, var_image=var, var_text=var.copy(),
                            probs_image=probs_image.astype(np.float32), probs_text=probs_text.astype(np.float32),
                            mc_probs_image=np.zeros((n, 0, c), np.float32), mc_probs_text=np.zeros((n, 0, c), np.float32),
                            match_a=5.0, match_b=2.0)


def _swapped_pool(n: int = 60, swaps: tuple[tuple[int, int], ...] = ((3, 6), (20, 41)), seed: int = 0):
    """n matching pairs in 4 classes (text = image embedding + noise), with the captions of ``swaps`` exchanged:
    the model outputs and the raw (image, text) features, each modality in its own random 24-d space."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n) % 4
    centres = rng.standard_normal((4, 16))
    mu_image = _unit(centres[classes] + 0.6 * rng.standard_normal((n, 16)))
    mu_text = _unit(mu_image + 0.1 * rng.standard_normal((n, 16)))
    probs = np.full((n, 4), 0.05)
    probs[np.arange(n), classes] = 0.9
    probs_text = probs.copy()
    raw_image = mu_image @ rng.standard_normal((16, 24))
    raw_text = mu_text @ rng.standard_normal((16, 24))
    for a, b in swaps:
        mu_text[[a, b]] = mu_text[[b, a]]
        probs_text[[a, b]] = probs_text[[b, a]]
        raw_text[[a, b]] = raw_text[[b, a]]
    return _outputs(mu_image, mu_text, probs, probs_text), raw_image, raw_text


def test_pairs_whose_embeddings_disagree_rank_above_matching_pairs():
    swapped = {3, 6, 20, 41}   # 3<->6 and 20<->41 are in different classes (n % 4 differs)
    scores = audit_pairs(*_swapped_pool())
    assert set(scores.order()[:4].tolist()) == swapped
    for name in AUDIT_COMPONENTS:   # every component, alone, puts the swapped pairs in its top 4
        assert set(np.argsort(-scores.ranks[name], kind="stable")[:4].tolist()) == swapped, name
    assert np.all((scores.score >= 0) & (scores.score <= 1))


def test_consistency_is_low_for_a_caption_unlike_the_captions_of_its_visual_neighbours():
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(5), 8)                        # 5 groups of 8 alike images with alike captions
    image = _unit(rng.standard_normal((5, 12))[groups] + 0.2 * rng.standard_normal((40, 12)))
    text = _unit(rng.standard_normal((5, 9))[groups] + 0.2 * rng.standard_normal((40, 9)))
    text[[0, 20]] = text[[20, 0]]                              # pair 0 now has a group-2 caption, pair 20 a group-0 one
    consistency = neighbour_consistency(image, text, 5, chunk_rows=16)
    others = np.delete(consistency, [0, 20])
    assert max(consistency[0], consistency[20]) < others.min()
    brute = [np.mean([text[i] @ text[j] for j in np.argsort(-(image @ image[i]))[1:6]]) for i in range(40)]
    assert consistency == pytest.approx(np.array(brute), rel=1e-5)   # the k nearest others, never the row itself


def _grouped_rows(n: int, groups: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _unit(rng.standard_normal((groups, d))[rng.integers(0, groups, n)] + 0.5 * rng.standard_normal((n, d)))


def _exact(x: np.ndarray, k: int) -> np.ndarray:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def test_cluster_restricted_neighbours_are_the_exact_ones_for_nearly_every_row_and_never_the_row_itself():
    x = _grouped_rows(3000, 12, 16, seed=1)
    found = cluster_neighbours(x, 10, cluster_rows=250, probes=3, seed=0)
    exact = _exact(x, 10)
    recall = np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, exact)]) / 10
    assert found.shape == (3000, 10) and recall > 0.95
    assert not (found == np.arange(3000)[:, None]).any()
    assert all(len(set(row)) == 10 for row in found.tolist())
    one_probe = cluster_neighbours(x, 10, cluster_rows=250, probes=1, seed=0)   # own cluster only: fewer found
    assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(one_probe, exact)]) / 10 < recall


def test_a_list_of_identical_rows_is_searched_through_a_bounded_sample(monkeypatch):
    import learner.audit as audit

    x = _grouped_rows(2000, 8, 16, seed=4)
    x[:1200] = x[0]                                                              # 1,200 repeated captions
    searched = []

    def recording(ref, queries, k, **kwargs):
        searched.append((len(ref), len(queries)))
        return cosine_neighbours(ref, queries, k, **kwargs)

    monkeypatch.setattr(audit, "cosine_neighbours", recording)
    found = cluster_neighbours(x, 5, cluster_rows=50, probes=3, seed=0, chunk_rows=256)
    lists = searched[1:]                                                         # after the centres' search
    assert max(ref for ref, _ in lists) <= 4 * 50                               # LIST_CAP_FACTOR x cluster_rows
    assert max(queries for _, queries in lists) <= 256
    assert np.allclose(np.einsum("nkd,nd->nk", x[found[:1200]], x[:1200]), 1.0, atol=1e-5)   # duplicates found
    assert not (found == np.arange(2000)[:, None]).any()


def test_a_cluster_smaller_than_k_searches_the_whole_pool():
    x = _grouped_rows(200, 4, 8, seed=2)
    x[:3] = _unit(np.tile([[1.0] + [0.0] * 7], (3, 1)) + 1e-3)                   # an isolated trio
    found = cluster_neighbours(x, 5, cluster_rows=3, probes=1, seed=0)           # clusters of about 3 rows
    assert not (found == np.arange(200)[:, None]).any()
    assert all(len(set(row)) == 5 for row in found.tolist())


def test_large_pools_audit_through_the_bounded_search_and_rank_swapped_captions_as_the_exact_one_does():
    rng = np.random.default_rng(3)
    image = _grouped_rows(1200, 8, 12, seed=3)
    text = _unit(image @ rng.standard_normal((12, 10)) + 0.3 * rng.standard_normal((1200, 10)))
    swapped = rng.choice(1200, size=60, replace=False)
    text[swapped] = text[np.roll(swapped, 1)]
    mu = image[:, :8].copy()
    inputs = gather_audit_inputs([_outputs(_unit(mu), _unit(mu), np.full((1200, 2), .5), np.full((1200, 2), .5))],
                                 1200, match_samples=3, seed=0)
    exact = audit_scores(inputs, image, text, AuditConfig(reduced_dims=8, mismatch=0.0))
    bounded = audit_scores(inputs, image, text, AuditConfig(reduced_dims=8, mismatch=0.0, exact_max_pool=1000,
                                                            cluster_rows=100))
    assert not np.array_equal(exact.components["inconsistency"], bounded.components["inconsistency"])
    hits = [len(np.intersect1d(scores.order()[:60], swapped)) for scores in (exact, bounded)]
    assert hits[0] >= 40 and abs(hits[1] - hits[0]) <= 2, hits


@pytest.mark.parametrize("exact_max_pool", [10_000, 100])
def test_the_consistency_on_two_threads_equals_the_one_on_one(exact_max_pool):
    """Both modalities at once on two threads (exact and bounded neighbourhoods): the same values as one
    after the other, up to float rounding, and neither thread's OpenMP or BLAS setting leaks out."""
    from threadpoolctl import threadpool_info
    rng = np.random.default_rng(4)
    image = _grouped_rows(600, 8, 12, seed=4)
    text = _unit(image @ rng.standard_normal((12, 10)) + 0.3 * rng.standard_normal((600, 10)))
    config = AuditConfig(reduced_dims=8, exact_max_pool=exact_max_pool, cluster_rows=50)
    before = [(lib["internal_api"], lib["num_threads"]) for lib in threadpool_info()]
    one = cross_modal_consistency(image, text, config, workers=1)
    two = cross_modal_consistency(image, text, config, workers=2)
    assert np.allclose(one, two, atol=1e-4) and np.corrcoef(one, two)[0, 1] > 0.9999
    assert [(lib["internal_api"], lib["num_threads"]) for lib in threadpool_info()] == before


def test_two_workers_search_the_two_modalities_at_the_same_time(monkeypatch):
    """``workers=2`` really overlaps the two directions: each waits at a two-party barrier, which a serial
    run would never pass (it would time out after 10 s and fail)."""
    import threading
    import learner.audit as audit
    barrier, threads = threading.Barrier(2, timeout=10), []
    original = audit.neighbour_consistency

    def meeting(*args, **kwargs):
        threads.append(threading.current_thread().name)
        barrier.wait()
        return original(*args, **kwargs)

    monkeypatch.setattr(audit, "neighbour_consistency", meeting)
    image = _grouped_rows(200, 4, 12, seed=5)
    cross_modal_consistency(image, image, AuditConfig(reduced_dims=8), workers=2)
    assert len(set(threads)) == 2 and all(name.startswith("pairlab-audit") for name in threads)


def test_reduced_features_are_unit_rows_of_at_most_the_asked_dimensions():
    reduced = reduce_features(np.random.default_rng(7).standard_normal((50, 30)), 8, seed=0, fit_rows=20)
    assert reduced.shape == (50, 8) and np.allclose(np.linalg.norm(reduced, axis=1), 1, atol=1e-5)


class _SlicedRows:
    """A memory-mapped (N, D) matrix that, like ``app.services.data.FeatureRows``, can only be read by row slices."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def __getitem__(self, rows: slice) -> np.ndarray:
        if not isinstance(rows, slice):
            raise TypeError("_SlicedRows: row slices only")
        return np.array(self.matrix[rows], dtype=np.float32)   # a copy, as FeatureRows reads


def _memory_mapped(tmp_path, name: str, array: np.ndarray) -> _SlicedRows:
    np.save(tmp_path / f"{name}.npy", array)
    return _SlicedRows(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))


def test_reduced_features_read_by_row_slices_equal_the_in_memory_reduction(tmp_path):
    features = np.random.default_rng(9).standard_normal((50, 30)).astype(np.float32)
    streamed = reduce_features(_memory_mapped(tmp_path, "f", features), 8, seed=0, fit_rows=20, chunk_rows=7)
    np.testing.assert_allclose(streamed, reduce_features(features, 8, seed=0, fit_rows=20), rtol=1e-5, atol=1e-6)


def test_a_streamed_audit_equals_the_in_memory_one(tmp_path):
    """Memory-mapped features read by row slices, batches of 16 inferred on 2 threads (the ``pairlab audit``
    path) against every output and feature in memory at once."""
    rng = np.random.default_rng(8)
    n, di, dt = 150, 24, 20
    groups = rng.integers(0, 5, n)
    image = (rng.standard_normal((5, di))[groups] + 0.4 * rng.standard_normal((n, di))).astype(np.float32)
    text = (image[:, :dt] + 0.3 * rng.standard_normal((n, dt))).astype(np.float32)
    text[[2, 70]] = text[[70, 2]]
    torch.manual_seed(0)
    model = CrossModalModel(di, dt, 4, dim=8, hidden=16).eval()
    config = AuditConfig(max_candidates=64, reduced_dims=6, neighbours=5, contrastive=1.0, disagreement=1.0)
    in_memory = audit_pairs(infer(model, image, text, mc_samples=0), image, text, config)
    image_rows, text_rows = _memory_mapped(tmp_path, "image", image), _memory_mapped(tmp_path, "text", text)
    batches = iter_infer(model, image_rows, text_rows, mc_samples=0, batch_size=16, workers=2)
    inputs = gather_audit_inputs(batches, n, match_samples=config.match_samples, seed=config.seed)
    streamed = audit_scores(inputs, image_rows, text_rows, config)
    for name in AUDIT_COMPONENTS:
        np.testing.assert_allclose(streamed.components[name], in_memory.components[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    np.testing.assert_allclose(streamed.score, in_memory.score, atol=1e-9)
    np.testing.assert_array_equal(streamed.caption_rank, in_memory.caption_rank)
    np.testing.assert_array_equal(streamed.order(), in_memory.order())


def test_gathering_the_audit_inputs_refuses_batches_that_do_not_cover_the_pool():
    outputs, _, _ = _swapped_pool()
    with pytest.raises(ValueError, match="held 60 rows, expected 61"):
        gather_audit_inputs([outputs], 61, match_samples=3, seed=0)
    with pytest.raises(ValueError, match="more than the 59 rows"):
        gather_audit_inputs([outputs], 59, match_samples=3, seed=0)


def test_the_mixture_posterior_separates_two_loss_populations():
    rng = np.random.default_rng(1)
    clean, noisy = rng.normal(1.0, 0.1, 180), rng.normal(4.0, 0.2, 20)
    posterior = mismatch_posterior(np.concatenate([clean, noisy]))
    assert posterior[:180].max() < 0.05 and posterior[180:].min() > 0.95
    assert np.all(mismatch_posterior(np.full(10, 2.0)) == 0.5)


def test_clean_probability_is_low_for_the_high_score_population_and_one_where_there_is_one_population():
    """P(clean) from raw suspicion values: 80 % of pairs spread over 0.05-0.75, 20 % around 0.95 (the swapped);
    one Gaussian population (a clean pool) or constant values: every pair clean, where a two-component
    fit alone would split the pool in half."""
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.uniform(0.05, 0.75, 800), rng.normal(0.95, 0.02, 200)])
    assert two_populations(scores, seed=0)
    p_clean = clean_probability(scores, seed=0)
    assert p_clean.shape == (1000,) and ((p_clean >= 0) & (p_clean <= 1)).all()
    assert p_clean[800:].max() < 0.1 and np.median(p_clean[:800]) > 0.9
    one = rng.normal(0.5, 0.1, 5000)
    assert not two_populations(one, seed=0) and (1.0 - mismatch_posterior(one, seed=0) < 0.5).mean() > 0.2
    assert np.array_equal(clean_probability(one, seed=0), np.ones(5000))
    assert np.array_equal(clean_probability(np.full(5, 0.3)), np.ones(5))


def test_pair_clean_probability_lets_the_model_sharpen_only_a_pool_the_raw_features_find_noisy():
    """"audit+model" weights: the raw-feature values gate (one population: every pair 1, whatever the
    model's mismatch says), and where they find two populations the model's P(clean) multiplies in, so a
    pair the raw features miss but the model flags loses weight; a model whose mixture calls far more of
    the pool noisy than the raw features do is not used."""
    rng = np.random.default_rng(4)
    two = np.concatenate([rng.uniform(0.05, 0.75, 800), rng.normal(0.95, 0.02, 200)])
    model = np.concatenate([rng.uniform(0.0, 0.3, 700), rng.normal(0.9, 0.02, 300)])   # also flags rows 700-799
    one = rng.normal(0.5, 0.1, 1000)
    assert np.array_equal(pair_clean_probability(one, model, seed=0), np.ones(1000))
    assert np.array_equal(pair_clean_probability(two, None, seed=0), clean_probability(two, seed=0))
    both = pair_clean_probability(two, model, seed=0)
    assert np.allclose(both, clean_probability(two, seed=0) * clean_probability(model, seed=0))
    assert np.median(both[700:800]) < 0.1 < 0.8 < np.median(both[:700])
    assert np.median(clean_probability(two, seed=0)[700:800]) > 0.8
    weak = np.concatenate([rng.normal(0.2, 0.02, 200), rng.uniform(0.5, 1.0, 800)])   # calls 80 % noisy
    assert np.array_equal(pair_clean_probability(two, weak, seed=0), clean_probability(two, seed=0))


def test_the_mixture_fits_on_a_sample_but_scores_every_row():
    rng = np.random.default_rng(2)
    losses = np.concatenate([rng.normal(1.0, 0.1, 900), rng.normal(4.0, 0.2, 100)])
    posterior = mismatch_posterior(losses, max_rows=200, seed=3)
    assert posterior.shape == (1000,)
    assert (posterior[900:] > 0.5).all() and (posterior[:900] < 0.5).all()


def test_contrastive_losses_match_a_direct_computation_and_exclude_the_pair_itself():
    rng = np.random.default_rng(4)
    mu_image, mu_text = _unit(rng.standard_normal((9, 5))), _unit(rng.standard_normal((9, 5)))
    candidates = np.array([0, 2, 5, 8])
    loss, caption_rank, image_rank = contrastive_losses(mu_image, mu_text, candidates, 0.2, chunk_rows=4)
    sims = mu_image.astype(np.float64) @ mu_text.T.astype(np.float64)
    for i in range(9):
        others = [j for j in candidates if j != i]
        halves = []
        for s in (sims[i], sims[:, i]):
            logits = np.array([s[i]] + [s[j] for j in others]) / 0.2
            halves.append(np.log(np.exp(logits).sum()) - s[i] / 0.2)
        assert loss[i] == pytest.approx(np.mean(halves), rel=1e-5)
        assert caption_rank[i] == pytest.approx(np.mean([sims[i, j] > sims[i, i] for j in others]))
        assert image_rank[i] == pytest.approx(np.mean([sims[j, i] > sims[i, i] for j in others]))


def test_candidates_are_the_whole_pool_up_to_the_limit_then_a_seeded_sample():
    assert candidate_rows(5, 8, 0).tolist() == [0, 1, 2, 3, 4]
    sample = candidate_rows(100, 10, 7)
    assert sample.shape == (10,) and len(set(sample.tolist())) == 10
    assert sample.tolist() == candidate_rows(100, 10, 7).tolist()


def test_best_alternatives_are_the_closest_other_rows_never_the_pair_itself():
    rng = np.random.default_rng(5)
    mu_image, mu_text = _unit(rng.standard_normal((30, 6))), _unit(rng.standard_normal((30, 6)))
    mu_text[4] = mu_image[4]               # pair 4 matches itself perfectly: its alternative is someone else
    rows = np.array([4, 11, 29])
    best_caption, best_image = best_alternatives(mu_image, mu_text, rows, chunk_rows=7)
    sims = mu_image @ mu_text.T
    for k, i in enumerate(rows):
        caption = sims[i].copy(); caption[i] = -np.inf
        image = sims[:, i].copy(); image[i] = -np.inf
        assert best_caption[k] == int(np.argmax(caption)) and best_image[k] == int(np.argmax(image))


def test_the_breakdown_names_every_component_with_value_rank_and_weight():
    config = AuditConfig(disagreement=0.0)
    scores = audit_pairs(*_swapped_pool(), config)
    record = breakdown(scores, 3, config)
    assert set(record["components"]) == set(AUDIT_COMPONENTS)
    for name, part in record["components"].items():
        assert part["value"] == pytest.approx(scores.components[name][3])
        assert part["rank"] == pytest.approx(scores.ranks[name][3])
        assert part["weight"] == config.weights()[name]
    fused = sum(p["weight"] * p["rank"] for p in record["components"].values()) / sum(config.weights().values())
    assert fused == pytest.approx(scores.score[3])
    assert 0 <= record["caption_rank"] <= 1 and 0 <= record["image_rank"] <= 1


@pytest.mark.parametrize("bad", [dict(mismatch=-1.0), dict(mismatch=0, contrastive=0, posterior=0, disagreement=0,
                                                               inconsistency=0), dict(neighbours=0),
                                 dict(cluster_rows=0), dict(probes=0), dict(exact_max_pool=-1),
                                 dict(temperature=0.0), dict(max_candidates=1), dict(mismatch=float("nan"))])
def test_bad_audit_settings_are_refused(bad):
    with pytest.raises(ValueError, match="AuditConfig"):
        AuditConfig(**bad)
