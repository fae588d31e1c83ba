"""``pairlab simulate`` end to end: the DESIGN §6 protocol on real data, results in the contract's schema."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.cli.demo import sample_captions
from app.bench.data import SimulationData, load_simulation_data, split_pool_and_test
from app.bench.simulate import SimulationConfig, run_simulation
from learner.encoders.tfidf import TfidfEncoder
from learner.training import TrainConfig
from tests.support.simulation import synthetic

REPO = Path(__file__).resolve().parents[2]
WIKI = REPO.parent / "shared" / "datasets" / "wiki-features"
ROUND_KEYS = {"labelled", "fraction", "i2t", "t2i", "avg", "select_seconds", "train_seconds"}
SELECTION_KEYS = {"competence", "mixing_weight"}  # rounds followed by a selection; the mixing weight: ascmr

pytestmark = pytest.mark.slow


def simulate(source: Path, out: Path, *extra: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "app.cli", "simulate", str(source), *extra, "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| strategy | AULC ± std |" in (out / "summary.md").read_text(encoding="utf-8")
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def check_schema(results: dict, strategies: list[str], seeds: list[int], points: int) -> None:
    assert {"dataset", "pool_size", "test_size", "seeds", "encoders", "full_supervision", "strategies"} <= set(results)
    assert results["seeds"] == seeds and list(results["strategies"]) == strategies
    assert set(results["full_supervision"]) == {"i2t", "t2i", "avg"}
    for runs in results["strategies"].values():
        assert [run["seed"] for run in runs] == seeds
        for run in runs:
            assert len(run["rounds"]) == points
            assert all(ROUND_KEYS <= set(r) <= ROUND_KEYS | SELECTION_KEYS for r in run["rounds"])
            labelled = [r["labelled"] for r in run["rounds"]]
            assert labelled == sorted(labelled) and len(set(labelled)) == points
            assert all(r["fraction"] == pytest.approx(r["labelled"] / results["pool_size"]) for r in run["rounds"])


def test_carved_test_split_keeps_every_image_on_one_side():
    groups = np.array([f"img{i // 5}" for i in range(100)], dtype=object)  # 20 images, 5 captions each
    pool, test = split_pool_and_test(np.array(["pool"] * 100, dtype=object), groups, seed=0)
    assert len(test) == 20 and len(pool) == 80
    assert not set(groups[pool]) & set(groups[test])


def test_a_validation_run_never_reads_the_test_split():
    """Two datasets that differ only in their test pairs give the same validation run, and a test run
    on them does differ (so the comparison can see a read)."""
    config = SimulationConfig(strategies=("random", "ascmr"), initial=10, budget=5, rounds=1, seeds=(0,),
                              evaluate_on="validation",
                              train=TrainConfig(dim=16, hidden=32, epochs=3, max_steps=30, min_epochs=1, batch_size=32,
                                                labelled_batch_size=8))
    data = synthetic()
    other = synthetic(seed=1)
    swapped = SimulationData(data.name, np.vstack([data.image[:90], other.image[90:]]),
                             np.vstack([data.text[:90], other.text[90:]]), np.vstack([data.labels[:90], other.labels[90:]]),
                             data.split, data.groups, data.encoders)
    first, second = run_simulation(data, config), run_simulation(swapped, config)
    assert first["pool_size"] + first["test_size"] == 90  # the pool's 90 pairs, split 80/20 by image
    assert "the test split was not used" in first["protocol"]["notes"][0]
    assert _same_metrics(first, second)
    tested = [run_simulation(d, replace(config, evaluate_on="test")) for d in (data, swapped)]
    assert tested[0]["test_size"] == 30 and not _same_metrics(*tested)


def _same_metrics(a: dict, b: dict) -> bool:
    def metrics(results):
        return [(r["i2t"], r["t2i"]) for runs in results["strategies"].values() for run in runs for r in run["rounds"]]
    return a["full_supervision"] == b["full_supervision"] and metrics(a) == metrics(b)


@pytest.mark.parametrize("with_test_split", [True, False])
def test_tfidf_never_sees_a_test_text(tmp_path, monkeypatch, with_test_split):
    """Given or carved, the test split's captions take no part in fitting TF-IDF."""
    rows = [r for r in sample_captions()[0] if r.image.name < "000000040000"]  # 7 images, ~35 captions
    test_images = {r.image_id for r in rows[:10]} if with_test_split else set()
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps({"image": str(r.image), "text": r.text, "labels": list(r.labels),
                                            "split": "test" if r.image_id in test_images else "pool"}) + "\n"
                                for r in rows), encoding="utf-8")
    fitted = []
    real = TfidfEncoder.fit
    monkeypatch.setattr(TfidfEncoder, "fit", lambda self, texts: (fitted.append(list(texts)), real(self, texts))[1])
    data = load_simulation_data(manifest, "manifest", cache_dir=tmp_path / "cache", carve_seed=0)
    texts = np.array([r.text for r in rows], dtype=object)
    test = data.split == "test"
    assert test.any() and (data.split != "test").any()
    assert fitted == [list(texts[~test])]


def test_simulate_on_raw_coco_images_and_captions(tmp_path):
    """The bundled COCO sample as a raw JSONL manifest (no test split): encoded once, test carved by image."""
    rows, _ = sample_captions()
    manifest = tmp_path / "coco.jsonl"
    manifest.write_text("".join(json.dumps({"image": str(r.image), "text": r.text, "labels": list(r.labels)}) + "\n"
                                for r in rows), encoding="utf-8")
    variants = tmp_path / "variants.toml"
    variants.write_text('[ascmr-dense]\nstrategy = "ascmr"\nweights = { density = 2.0 }\n', encoding="utf-8")
    out = tmp_path / "out"
    results = simulate(manifest, out, "--strategies", "ascmr,random,ascmr-dense", "--variants", str(variants),
                       "--rounds", "2", "--seeds", "0", "--initial", "0.05", "--budget", "0.05", "--jobs", "2")
    check_schema(results, ["ascmr", "random", "ascmr-dense"], [0], 3)
    assert results["protocol"]["variants"] == {"ascmr-dense": {"strategy": "ascmr", "weights": {"density": 2.0}}}
    assert results["protocol"]["warm_start"] is False
    assert results["encoders"] == {"image": "efficientnet-lite0", "text": "tfidf"}
    assert results["protocol"]["test_carved"] is True
    assert results["pool_size"] + results["test_size"] == len(rows)
    assert any((out / "cache").iterdir())  # encoded once, cached for the next run


@pytest.mark.skipif(not WIKI.is_dir() and os.environ.get("CI") != "true",
                    reason="../shared/datasets/wiki-features is absent (it is present in CI)")
def test_simulate_on_wikipedia_features_with_the_official_split(tmp_path):
    results = simulate(WIKI, tmp_path / "out", "--format", "wiki", "--strategies", "ascmr,entropy", "--rounds", "1",
                       "--seeds", "0")
    check_schema(results, ["ascmr", "entropy"], [0], 2)
    assert (results["pool_size"], results["test_size"]) == (2173, 693)
    assert results["encoders"] == {"image": "precomputed", "text": "precomputed"}
    assert results["protocol"]["test_carved"] is False
    assert results["full_supervision"]["avg"] > 0.2  # far above the ~0.14 of an untrained model
