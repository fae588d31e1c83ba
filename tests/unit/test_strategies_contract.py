"""The contract every query strategy (and the cold start) keeps, on tiny seeded synthetic outputs.

small-text style: one parametrised test suite run against all strategies.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from learner.outputs import InferenceOutputs
from learner.selection import (
    STRATEGY_NAMES, AscmrConfig, BadgeConfig, EmptyPoolError, InformativenessWeights, PoolTooSmallError, Selection,
    build_strategy, cold_start, get_strategy, strategy_config_class,
)
from learner.selection.strategies import ProbcoverConfig, TypiclustConfig

N, D, C, K, RAW = 60, 8, 5, 3, 12
LABELLED = np.arange(0, 60, 6)                                                     # 10 labelled rows
POOL = np.setdiff1d(np.arange(N), LABELLED)[:-5]                                   # 45 pool rows, 5 rows in neither


def _outputs(seed: int = 0, dropout: bool = True) -> InferenceOutputs:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4, D))
    group = rng.integers(0, 4, N)
    mu = centres[group][None] + 0.3 * rng.standard_normal((2, N, D))
    mu = (mu / np.linalg.norm(mu, axis=2, keepdims=True)).astype(np.float32)
    logits = rng.standard_normal((N, C)) * 2
    sig = lambda z: (1 / (1 + np.exp(-z))).astype(np.float32)                      # noqa: E731
    return InferenceOutputs(
        mu_image=mu[0], mu_text=mu[1],
        var_image=rng.uniform(0.01, 0.1, (N, D)).astype(np.float32),
        var_text=rng.uniform(0.01, 0.1, (N, D)).astype(np.float32),
        probs_image=sig(logits + rng.standard_normal((N, C))), probs_text=sig(logits + rng.standard_normal((N, C))),
        mc_probs_image=sig(logits[:, None] + rng.standard_normal((N, K, C))),
        mc_probs_text=sig(logits[:, None] + rng.standard_normal((N, K, C))),
        dropout_probs=sig(logits[:, None] + rng.standard_normal((N, 4, C))) if dropout else None,
        match_a=5.0, match_b=2.5)


RAW_FEATURES = np.random.default_rng(1).standard_normal((N, RAW)).astype(np.float32)
NAMES = [*STRATEGY_NAMES, "cold_start"]


def _query(name, pool, labelled, n, seed=0, outputs=None) -> Selection:
    if name == "cold_start":
        return cold_start(RAW_FEATURES, pool, n, seed=seed)
    return get_strategy(name).query(outputs or _outputs(), pool, labelled, n, seed=seed)


def test_all_nine_strategies_are_registered():
    assert set(STRATEGY_NAMES) == {"ascmr", "random", "entropy", "bald", "coreset", "badge", "inter", "typiclust",
                                   "probcover"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 7, len(POOL)])
def test_returns_n_distinct_pool_indices_none_labelled(name, n):
    sel = _query(name, POOL, LABELLED, n)
    assert isinstance(sel, Selection)
    assert sel.indices.shape == (n,) and np.issubdtype(sel.indices.dtype, np.integer)
    assert len(set(sel.indices.tolist())) == n
    assert set(sel.indices.tolist()) <= set(POOL.tolist())
    assert not set(sel.indices.tolist()) & set(LABELLED.tolist())
    assert sel.scores.shape == (len(POOL),)


@pytest.mark.parametrize("name", NAMES)
def test_explanation_has_one_json_entry_per_index(name):
    sel = _query(name, POOL, LABELLED, 7)
    assert len(sel.explanation) == len(sel.indices)
    json.dumps(sel.explanation, allow_nan=False)
    json.dumps(sel.params, allow_nan=False)
    for order, (entry, index) in enumerate(zip(sel.explanation, sel.indices.tolist())):
        assert entry["index"] == index and entry["order"] == order
        assert {"rank", "score"} <= set(entry)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_seed(name):
    first, second = _query(name, POOL, LABELLED, 7, seed=3), _query(name, POOL, LABELLED, 7, seed=3)
    np.testing.assert_array_equal(first.indices, second.indices)
    assert first.explanation == second.explanation


@pytest.mark.parametrize("name", NAMES)
def test_clear_errors_on_empty_pool_and_oversized_budget(name):
    with pytest.raises(EmptyPoolError, match="empty"):
        _query(name, np.zeros(0, dtype=np.int64), LABELLED, 1)
    with pytest.raises(PoolTooSmallError, match="exceeds the pool size 45"):
        _query(name, POOL, LABELLED, len(POOL) + 1)
    with pytest.raises(ValueError, match="positive integer"):
        _query(name, POOL, LABELLED, 0)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_keeps_last_scores_and_rejects_bad_indices(name):
    strategy = get_strategy(name)
    sel = strategy.query(_outputs(), POOL, LABELLED, 5)
    assert strategy.last_scores is sel.scores
    with pytest.raises(ValueError, match="overlaps"):
        strategy.query(_outputs(), POOL, POOL[:2], 5)
    with pytest.raises(ValueError, match=r"\[0, 60\)"):
        strategy.query(_outputs(), np.append(POOL, 60), LABELLED, 5)
    with pytest.raises(ValueError, match="distinct"):
        strategy.query(_outputs(), np.append(POOL, POOL[0]), LABELLED, 5)


def test_bald_without_dropout_probabilities_is_a_clear_error():
    with pytest.raises(ValueError, match="dropout_probs"):
        get_strategy("bald").query(_outputs(dropout=False), POOL, LABELLED, 3)


def test_registry_lists_allowed_names_and_options():
    with pytest.raises(ValueError, match="allowed: ascmr, random, entropy, bald, coreset, badge, inter"):
        get_strategy("nope")
    with pytest.raises(ValueError, match="unknown options.*allowed: weights"):
        get_strategy("ascmr", gamm=1.0)
    with pytest.raises(ValueError, match="takes no options"):
        get_strategy("random", k=3)
    with pytest.raises(ValueError, match="unknown weights"):
        get_strategy("ascmr", weights={"entropyy": 1.0})
    with pytest.raises(ValueError, match="gamma"):
        get_strategy("ascmr", gamma=-1.0)
    assert get_strategy("ascmr", gamma=1.0, weights={"density": 0.0}).params()["weights"]["density"] == 0.0


def test_registry_builds_strategies_from_config_instances():
    configs = {name: strategy_config_class(name) for name in STRATEGY_NAMES}
    assert configs == {"ascmr": AscmrConfig, "badge": BadgeConfig, "random": None, "entropy": None, "bald": None,
                       "coreset": None, "inter": None, "typiclust": TypiclustConfig, "probcover": ProbcoverConfig}
    built = build_strategy("ascmr", AscmrConfig(gamma=1.0))
    assert built.name == "ascmr" and built.params() == get_strategy("ascmr", gamma=1.0).params()
    assert build_strategy("badge").params() == dataclasses.asdict(BadgeConfig())
    assert build_strategy("random").name == "random"
    with pytest.raises(ValueError, match="allowed: ascmr, random"):
        strategy_config_class("nope")
    with pytest.raises(ValueError, match="takes no options"):
        build_strategy("entropy", BadgeConfig())
    with pytest.raises(TypeError, match="expected a AscmrConfig instance, got BadgeConfig"):
        build_strategy("ascmr", BadgeConfig())


def test_ascmr_explanation_records_every_component():
    sel = get_strategy("ascmr").query(_outputs(), POOL, LABELLED, 7)
    keys = set(sel.explanation[0])
    assert {"informativeness", "density", "cluster", "clusters", "cluster_budget", "cluster_coverage", "max_similarity",
            "spread_image", "spread_text", "entropy_image", "entropy_text", "mutual_information_image",
            "mutual_information_text", "match_probability", "match_entropy", "mismatch", "disagreement",
            "mixing_weight", "competence", "coverage_part", "uncertainty_part"} <= keys
    assert sel.params["weights"] == dataclasses.asdict(InformativenessWeights())  # recorded with the round
