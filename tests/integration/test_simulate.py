"""``pairlab simulate`` end to end: the DESIGN §6 protocol on real data, results in the contract's schema."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.demo import sample_captions
from app.simulate import split_pool_and_test

REPO = Path(__file__).resolve().parents[2]
WIKI = REPO.parent / "shared" / "datasets" / "wiki-features"
ROUND_KEYS = {"labelled", "fraction", "i2t", "t2i", "avg", "select_seconds", "train_seconds"}

pytestmark = pytest.mark.slow


def simulate(source: Path, out: Path, *extra: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "app.cli", "simulate", str(source), *extra, "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "| strategy | AULC |" in (out / "summary.md").read_text(encoding="utf-8")
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def check_schema(results: dict, strategies: list[str], seeds: list[int], points: int) -> None:
    assert {"dataset", "pool_size", "test_size", "seeds", "encoders", "full_supervision", "strategies"} <= set(results)
    assert results["seeds"] == seeds and list(results["strategies"]) == strategies
    assert set(results["full_supervision"]) == {"i2t", "t2i", "avg"}
    for runs in results["strategies"].values():
        assert [run["seed"] for run in runs] == seeds
        for run in runs:
            assert len(run["rounds"]) == points
            assert all(set(r) == ROUND_KEYS for r in run["rounds"])
            labelled = [r["labelled"] for r in run["rounds"]]
            assert labelled == sorted(labelled) and len(set(labelled)) == points
            assert all(r["fraction"] == pytest.approx(r["labelled"] / results["pool_size"]) for r in run["rounds"])


def test_carved_test_split_keeps_every_image_on_one_side():
    groups = np.array([f"img{i // 5}" for i in range(100)], dtype=object)  # 20 images, 5 captions each
    pool, test = split_pool_and_test(np.array(["pool"] * 100, dtype=object), groups, seed=0)
    assert len(test) == 20 and len(pool) == 80
    assert not set(groups[pool]) & set(groups[test])


def test_simulate_on_raw_coco_images_and_captions(tmp_path):
    """The bundled COCO sample as a raw JSONL manifest (no test split): encoded once, test carved by image."""
    rows, _ = sample_captions()
    manifest = tmp_path / "coco.jsonl"
    manifest.write_text("".join(json.dumps({"image": str(r.image), "text": r.text, "labels": list(r.labels)}) + "\n"
                                for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    results = simulate(manifest, out, "--strategies", "ascmr,random", "--rounds", "2", "--seeds", "0",
                       "--initial", "0.05", "--budget", "0.05")
    check_schema(results, ["ascmr", "random"], [0], 3)
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
