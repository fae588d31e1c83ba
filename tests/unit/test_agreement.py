"""Krippendorff's alpha against hand-computed examples."""
import math

import numpy as np
import pytest

from storage.agreement import krippendorff_alpha_nominal, label_alphas, nominal_alpha


def test_binary_example_by_hand():
    # Units (2 coders each): (1,1), (0,0), (1,0).
    # Coincidences: o00 = 2, o11 = 2, o01 = o10 = 1; n0 = n1 = 3, n = 6.
    # alpha = 1 - (n-1) * (o01 + o10) / (2 * n0 * n1) = 1 - 5 * 2 / 18 = 4/9.
    counts = np.array([[0, 2], [2, 0], [1, 1]])
    assert krippendorff_alpha_nominal(counts) == pytest.approx(4 / 9)


def test_three_coders_with_missing_values_by_hand():
    # Values per unit: {a,a,b}, {b,b}, {a} (unpairable, ignored).
    # Unit 1 (m=3, weight 1/2): o_aa = (4-2)/2 = 1, o_ab = o_ba = 2/2 = 1, o_bb = 0.
    # Unit 2 (m=2, weight 1):   o_bb = 4-2 = 2.
    # Total: o_aa=1, o_ab=o_ba=1, o_bb=2; n_a=2, n_b=3, n=5.
    # alpha = 1 - 4 * 2 / (2 * 2 * 3) = 1 - 8/12 = 1/3.
    assert nominal_alpha([["a", "a", "b"], ["b", "b"], ["a"]]) == pytest.approx(1 / 3)


def test_perfect_agreement_is_one_and_no_variation_is_undefined():
    assert krippendorff_alpha_nominal(np.array([[2, 0], [0, 2]])) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha_nominal(np.array([[2, 0], [3, 0]])))
    assert math.isnan(krippendorff_alpha_nominal(np.zeros((0, 2))))


def test_label_alphas_score_each_label_as_binary():
    votes = [[{"cat"}, {"cat"}], [set(), set()], [{"cat", "dog"}, {"dog"}], [{"dog"}]]
    by_label = {a.label: a for a in label_alphas(votes, ["cat", "dog", "bird"])}
    # cat over the three pairable units: (1,1), (0,0), (1,0) -> the 4/9 example above.
    assert by_label["cat"].alpha == pytest.approx(4 / 9)
    assert by_label["cat"].units == 3 and by_label["cat"].positives == 3
    # dog: (0,0), (0,0), (1,1) -> perfect agreement.
    assert by_label["dog"].alpha == pytest.approx(1.0)
    assert math.isnan(by_label["bird"].alpha)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="counts"):
        krippendorff_alpha_nominal(np.array([1, 2, 3]))
