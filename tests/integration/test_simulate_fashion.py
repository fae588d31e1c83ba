"""``pairlab simulate`` on a small slice of the fashion catalogue (real photos and titles): the
coverage strategies run end to end and every strategy holds out the seed's fixed validation rows."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.bench.data import load_simulation_data
from app.bench.simulate import SimulationConfig, run_simulation
from learner.training import TrainConfig

pytestmark = pytest.mark.slow


def test_a_fashion_slice_runs_every_coverage_strategy_on_one_validation_set(fashion_dir, tmp_path):
    rows = [json.loads(line) for line in (fashion_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    pool = [r for r in rows if r["split"] == "pool"][:100]
    test = [r for r in rows if r["split"] == "test"][:30]
    manifest = tmp_path / "fashion-slice.jsonl"
    manifest.write_text("".join(json.dumps({**r, "image": str(fashion_dir / r["image"])}) + "\n" for r in pool + test),
                        encoding="utf-8")
    data = load_simulation_data(manifest, "manifest", cache_dir=tmp_path / "cache", carve_seed=0)
    assert data.image.shape == (130, 1280) and not data.test_carved
    strategies = ("ascmr", "random", "typiclust", "probcover")
    config = SimulationConfig(strategies=strategies, initial=20, budget=10, rounds=1, seeds=(0,),
                              train=TrainConfig(epochs=2, max_steps=6, min_epochs=1, min_steps_per_epoch=3))
    results = run_simulation(data, config)
    rows_0 = results["protocol"]["validation"]["rows_per_seed"]["0"]
    assert len(rows_0) == 4
    for name in strategies:
        run = results["strategies"][name][0]
        assert run["validation_rows"] == [rows_0], name
        assert [r["labelled"] for r in run["rounds"]] == [20, 30]
        assert 0.0 <= run["rounds"][0]["competence"] <= 1.0
    assert 0.0 <= results["strategies"]["ascmr"][0]["rounds"][0]["mixing_weight"] <= 1.0
    assert np.isfinite(results["full_supervision"]["avg"])
