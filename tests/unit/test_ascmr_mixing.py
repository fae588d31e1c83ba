"""Budget-aware ``ascmr``: the mixing weight between coverage (density) and uncertainty follows the
model's competence (DCoM), and the selection and its explanation follow the mixing weight."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from learner.metrics import competence
from learner.selection import AscmrConfig, InformativenessWeights, get_strategy
from learner.selection.ascmr import mixing_weight
from tests.unit.test_strategies_contract import LABELLED, POOL, _outputs


@pytest.mark.parametrize(("value", "alpha"), [(0.0, 0.0), (0.5, 0.0), (0.6, 0.25), (0.7, 0.5), (0.9, 1.0), (1.0, 1.0)])
def test_the_mixing_weight_moves_with_competence(value, alpha):
    assert mixing_weight(AscmrConfig(), value) == pytest.approx(alpha)


def test_without_competence_the_weights_decide_the_mix():
    assert mixing_weight(AscmrConfig(), None) == pytest.approx(0.5)               # density 2 of 4
    assert mixing_weight(AscmrConfig(budget_aware=False), 0.95) == pytest.approx(0.5)
    assert mixing_weight(AscmrConfig(weights=InformativenessWeights(density=0.0)), 0.0) == 1.0
    assert mixing_weight(AscmrConfig(weights=InformativenessWeights(match=0, disagreement=0)), 1.0) == 0.0


def test_a_weak_model_picks_by_coverage_a_competent_one_by_uncertainty():
    def pick(value):
        sel = get_strategy("ascmr", n_clusters=1, lam=0.0).query(replace(_outputs(), competence=value), POOL,
                                                                   LABELLED, 1, seed=0)
        return sel.explanation[0]

    weak, strong = pick(0.1), pick(0.95)
    assert (weak["mixing_weight"], strong["mixing_weight"]) == (0.0, 1.0)
    assert (weak["competence"], strong["competence"]) == (0.1, 0.95)
    assert weak["coverage_part"] == 1.0 and weak["score"] == 1.0                   # the densest pool pair
    assert strong["uncertainty_part"] == strong["score"] > weak["uncertainty_part"]
    assert weak["index"] != strong["index"]
    middle = pick(0.7)
    assert middle["score"] == pytest.approx(0.5 * middle["coverage_part"] + 0.5 * middle["uncertainty_part"])


def test_competence_is_precision_at_one_on_labelled_pairs():
    probs = np.array([[0.9, 0.1, 0.3], [0.2, 0.7, 0.1], [0.1, 0.2, 0.8], [0.6, 0.5, 0.1]])
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 0]], dtype=np.float32)
    assert competence(probs, labels) == 0.75
    assert competence(probs[:1], labels[:1]) is None


def test_the_labelled_plus_budget_rule_clusters_into_one_more_cluster_per_labelled_pair():
    """TypiClust's |L| + n clusters (``cluster_rule="labelled+budget"``) against the default n, capped by
    max_clusters, and recorded in every pick's explanation."""
    def clusters(**options):
        return {e["clusters"] for e in get_strategy("ascmr", **options).query(_outputs(), POOL, LABELLED, 3,
                                                                             seed=0).explanation}
    assert clusters() == {3}
    assert clusters(cluster_rule="labelled+budget") == {len(LABELLED) + 3}
    assert clusters(cluster_rule="labelled+budget", max_clusters=4) == {4}
