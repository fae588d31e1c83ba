"""The simulate outputs: learning-curve area, threshold fractions, and the three written files."""
import json

import numpy as np
import pytest

from app.bench.reports import area_under_curve, first_reaching, summarise, summary_markdown, write_reports


def run(seed, values, fractions=(0.01, 0.02, 0.03)):
    return {"seed": seed, "rounds": [{"labelled": int(f * 1000), "fraction": f, "i2t": v, "t2i": v, "avg": v,
                                      "select_seconds": 0.0, "train_seconds": 0.0}
                                     for f, v in zip(fractions, values)]}


RESULTS = {"dataset": "toy", "pool_size": 1000, "test_size": 100, "seeds": [0, 1],
           "encoders": {"image": "precomputed", "text": "precomputed"},
           "full_supervision": {"i2t": 0.5, "t2i": 0.5, "avg": 0.5},
           "strategies": {"good": [run(0, [0.40, 0.46, 0.48]), run(1, [0.40, 0.48, 0.48])],
                          "poor": [run(0, [0.40, 0.41, 0.42]), run(1, [0.40, 0.41, 0.42])]}}


def test_area_is_the_trapezoid_mean_over_the_fraction_range():
    # widths 0.01 each: (0.4+0.47)/2*0.01 + (0.47+0.48)/2*0.01 = 0.00435 + 0.00475 = 0.0091; / 0.02 = 0.455
    assert area_under_curve(np.array([0.01, 0.02, 0.03]), np.array([0.40, 0.47, 0.48])) == pytest.approx(0.455)


def test_first_fraction_reaching_a_share_of_full_supervision():
    relative = np.array([0.8, 0.92, 0.96])
    fractions = np.array([0.01, 0.02, 0.03])
    assert first_reaching(fractions, relative, 0.90) == 0.02
    assert first_reaching(fractions, relative, 0.95) == 0.03
    assert first_reaching(fractions, relative, 0.99) is None


def test_summary_ranks_by_area_and_uses_seed_means():
    rows = summarise(RESULTS)
    assert [r["strategy"] for r in rows] == ["good", "poor"]
    assert rows[0]["mean"] == pytest.approx([0.40, 0.47, 0.48])
    assert rows[0]["std"][1] == pytest.approx(0.01)
    assert rows[0]["reach_90"] == 0.02 and rows[0]["reach_95"] == 0.03  # 0.47/0.5 = 94 %, 0.48/0.5 = 96 %
    assert rows[1]["reach_90"] is None
    assert rows[0]["aulc_std"] == pytest.approx(0.005)  # per-seed areas 0.45 and 0.46
    assert "vs_baseline" not in rows[0]  # no random run to compare with


def test_summary_pairs_each_strategy_with_random_by_seed():
    results = {**RESULTS, "strategies": {**RESULTS["strategies"], "random": [run(0, [0.40, 0.47, 0.47]),
                                                                            run(1, [0.40, 0.45, 0.46])]}}
    rows = {r["strategy"]: r for r in summarise(results)}
    # good: areas 0.45 and 0.46; random: (0.435 + 0.47)/2 = 0.4525 and (0.425 + 0.455)/2 = 0.44
    diff, won, seeds = rows["good"]["vs_baseline"]
    assert diff == pytest.approx(((0.45 - 0.4525) + (0.46 - 0.44)) / 2) and (won, seeds) == (1, 2)
    assert "vs_baseline" not in rows["random"]  # not paired with itself


def test_reports_are_written(tmp_path):
    write_reports(RESULTS, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == RESULTS
    summary = (tmp_path / "summary.md").read_text()
    assert "| good | 0.4550 ± 0.0050 |  |" in summary and "not reached" in summary
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))
    assert "Pool 1000 pairs, test 100 pairs" in summary


def test_a_tuning_run_says_it_was_measured_on_validation():
    tuning = {**RESULTS, "protocol": {"evaluated_on": "validation"}}
    assert "Pool 1000 pairs, validation 100 pairs" in summary_markdown(tuning)
