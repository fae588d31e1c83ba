"""Benchmark of the learner core: Wikipedia test mAP, semi- vs supervised-only, training time at 20k pairs.

    .venv/bin/python benchmarks/bench_train.py                      # everything, 3 seeds
    .venv/bin/python benchmarks/bench_train.py --seeds 0 --skip-timing   # quick run

Model selection uses only a validation split carved from the labelled training pairs; the test
split is evaluated once per trained model and never used for any choice.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner.inference import infer  # noqa: E402
from learner.metrics import evaluate_retrieval  # noqa: E402
from learner.training import TrainConfig, train_model  # noqa: E402
from storage.wiki import read_wiki  # noqa: E402


def _test_metrics(model, ds) -> dict[str, float]:
    test = ds.split_mask("test")
    out = infer(model, ds.image_features[test], ds.text_features[test], mc_samples=0)
    return evaluate_retrieval(out.mu_image, out.mu_text, ds.label_matrix()[test])


def _fmt(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def full_supervision(ds, seeds: list[int], config: TrainConfig) -> None:
    train = ds.split_mask("train")
    rows = {"i2t": [], "t2i": [], "avg": [], "seconds": []}
    for seed in seeds:
        res = train_model(ds.image_features[train], ds.text_features[train], ds.label_matrix()[train],
                          np.ones(train.sum(), dtype=bool), dataclasses.replace(config, seed=seed))
        m = _test_metrics(res.model, ds)
        for k in ("i2t", "t2i", "avg"):
            rows[k].append(m[k])
        rows["seconds"].append(res.seconds)
        print(f"  seed {seed}: i2t {m['i2t']:.4f}  t2i {m['t2i']:.4f}  avg {m['avg']:.4f}  "
              f"(best epoch {res.best_epoch}, {res.seconds:.1f} s)", flush=True)
    print(f"full supervision, wiki test mAP@all over seeds {seeds}: i2t {_fmt(rows['i2t'])}  "
          f"t2i {_fmt(rows['t2i'])}  avg {_fmt(rows['avg'])}  ({np.mean(rows['seconds']):.1f} s per run)", flush=True)


def semi_vs_supervised(ds, seeds: list[int], fractions: list[float], config: TrainConfig) -> None:
    train = np.flatnonzero(ds.split_mask("train"))
    x_v, x_t, y = ds.image_features[train], ds.text_features[train], ds.label_matrix()[train]
    variants = {"semi": config, "supervised-only": dataclasses.replace(config, use_unlabelled=False)}
    for frac in fractions:
        scores = {name: [] for name in variants}
        for seed in seeds:
            rng = np.random.default_rng(10_000 + seed)
            labelled = np.zeros(train.size, dtype=bool)
            labelled[rng.choice(train.size, int(round(frac * train.size)), replace=False)] = True
            for name, cfg in variants.items():
                res = train_model(x_v, x_t, y, labelled, dataclasses.replace(cfg, seed=seed))
                scores[name].append(_test_metrics(res.model, ds)["avg"])
            print(f"  {frac:.0%} seed {seed}: semi {scores['semi'][-1]:.4f}  "
                  f"supervised-only {scores['supervised-only'][-1]:.4f}", flush=True)
        gain = np.array(scores["semi"]) - np.array(scores["supervised-only"])
        print(f"{frac:.0%} labels ({labelled.sum()} pairs), wiki test avg mAP over seeds {seeds}: "
              f"semi {_fmt(scores['semi'])}  supervised-only {_fmt(scores['supervised-only'])}  "
              f"gain {gain.mean():+.4f} (per seed {np.round(gain, 4).tolist()})", flush=True)


def synthetic_pool(n: int, seed: int = 0, image_dim: int = 1280, text_dim: int = 512, classes: int = 80):
    """n pairs with 1-3 of ``classes`` labels each; features are noisy random projections of the label prototypes."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, classes), dtype=np.float32)
    labels[np.arange(n), rng.integers(0, classes, n)] = 1.0
    for _ in range(2):
        extra = np.flatnonzero(rng.random(n) < 0.5)
        labels[extra, rng.integers(0, classes, extra.size)] = 1.0
    protos = rng.normal(size=(classes, 64)).astype(np.float32)
    latent = labels @ protos + rng.normal(size=(n, 64)).astype(np.float32)
    image = latent @ rng.normal(size=(64, image_dim)).astype(np.float32) + rng.normal(size=(n, image_dim)).astype(np.float32)
    text = latent @ rng.normal(size=(64, text_dim)).astype(np.float32) + rng.normal(size=(n, text_dim)).astype(np.float32)
    return image, text, labels


def timing(n: int, fraction: float, config: TrainConfig) -> None:
    image, text, labels = synthetic_pool(n)
    labelled = np.zeros(n, dtype=bool)
    labelled[np.random.default_rng(0).choice(n, int(fraction * n), replace=False)] = True
    runs = {"semi (default)": config,
            "baseline: same model, semi terms off": dataclasses.replace(config, use_unlabelled=False)}
    seconds, per_step = {}, {}
    for name, cfg in runs.items():
        res = train_model(image, text, labels, labelled, cfg)
        steps = sum(h["steps"] for h in res.history)
        seconds[name], per_step[name] = res.seconds, res.seconds / steps
        print(f"  {name}: {res.seconds:.1f} s, {len(res.history)} epochs / {steps:.0f} steps (best epoch "
              f"{res.best_epoch}), {1000 * per_step[name]:.0f} ms/step, "
              f"val avg mAP {res.best_metrics.get('avg', float('nan')):.4f}", flush=True)
    (sa, sb), (pa, pb) = seconds.values(), per_step.values()
    print(f"training time on a synthetic {n}-pair pool (1280-d image, 512-d text, 80 labels, {fraction:.0%} labelled): "
          f"semi {sa:.1f} s; ratio semi / baseline: total {sa / sb:.2f}, per step {pa / pb:.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wiki", default=str(ROOT.parent / "shared" / "datasets" / "wiki-features"))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--fractions", default="0.03,0.05", help="labelled fractions of the train split")
    parser.add_argument("--epochs", type=int, default=None, help="override TrainConfig.epochs (quick runs)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (at most 2 on the shared machine)")
    parser.add_argument("--n-synthetic", type=int, default=20_000)
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--skip-semi", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = TrainConfig() if args.epochs is None else TrainConfig(epochs=args.epochs)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"config: {config}", flush=True)
    if not (args.skip_full and args.skip_semi):
        ds = read_wiki(args.wiki)
        if not args.skip_full:
            full_supervision(ds, seeds, config)
        if not args.skip_semi:
            semi_vs_supervised(ds, seeds, [float(f) for f in args.fractions.split(",")], config)
    if not args.skip_timing:
        timing(args.n_synthetic, 0.05, config)


if __name__ == "__main__":
    main()
