"""How much of a learning curve's wiggle is training noise? Wikipedia features, validation split only.

    .venv/bin/python benchmarks/wiki_noise.py                 # 3 % labels, 6 repeats of each kind
    .venv/bin/python benchmarks/wiki_noise.py --labels 22 65 --repeats 8

For each label count n it trains the learner on the pool (the official training pairs less a
validation split of 20 % of their images, carved exactly as ``pairlab simulate --evaluate-on
validation`` does) and reports the spread of the validation avg mAP:

- *training seed*: one fixed random labelled set, the training seed varied;
- *labelled set*: the training seed fixed, a fresh uniformly random labelled set of n pairs each time.

A strategy's effect on a learning curve is the difference between labelled sets of the same size,
so it can only be resolved when it is larger than the training-seed spread divided by the square
root of the number of seeds. The test split is never read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.bench.data import VALIDATION_FRACTION, carve_by_group, load_simulation_data, split_pool_and_test  # noqa: E402
from learner.inference import evaluate_model  # noqa: E402
from learner.training import TrainConfig, train_model  # noqa: E402

WIKI = ROOT.parent / "shared" / "datasets" / "wiki-features"


def validation_map(data, pool: np.ndarray, validation: np.ndarray, labelled: np.ndarray, config: TrainConfig,
                   seed: int) -> float:
    """Train on the pool with ``labelled`` (positions into pool) revealed; validation avg mAP."""
    mask = np.zeros(len(pool), dtype=bool)
    mask[labelled] = True
    model = train_model(data.image[pool], data.text[pool], data.labels[pool], mask, replace(config, seed=seed)).model
    return evaluate_model(model, data.image[validation], data.text[validation], data.labels[validation])["avg"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, nargs="+", default=[65], help="labelled pair counts (65 = 3 %% of the pool)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainConfig field to override, e.g. --set val_fraction=0 (repeatable)")
    parser.add_argument("--carve-seed", type=int, default=10, help="seed of the validation carve (as simulate's first seed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (pinned, as simulate does)")
    parser.add_argument("--seed-only", action="store_true", help="only the training-seed spread (half the trainings)")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    if not WIKI.exists():
        sys.exit(f"{WIKI}: not found (the Wikipedia features live in ../shared/datasets)")
    config = TrainConfig(**{k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    data = load_simulation_data(WIKI, "wiki", cache_dir=ROOT / "bench-out" / "cache", carve_seed=args.carve_seed)
    pool, _ = split_pool_and_test(data.split, data.groups, args.carve_seed)
    pool, validation = carve_by_group(pool, data.groups, VALIDATION_FRACTION, args.carve_seed)
    full = validation_map(data, pool, validation, np.arange(len(pool)), config, 0)
    print(f"TrainConfig overrides: {args.set or 'none'}")
    print(f"pool {len(pool)} pairs, validation {len(validation)} pairs; full supervision (seed 0): {full:.4f}")
    print("| labelled | spread over | mean | std | min | max | std set / std seed |")
    print("|---|---|---|---|---|---|---|")
    for n in args.labels:
        start = time.perf_counter()
        fixed = np.random.default_rng(1000 + n).choice(len(pool), n, replace=False)
        by_seed = [validation_map(data, pool, validation, fixed, config, seed) for seed in range(args.repeats)]
        by_set = [] if args.seed_only else [
            validation_map(data, pool, validation, np.random.default_rng(2000 + r).choice(len(pool), n, replace=False),
                           config, 0) for r in range(args.repeats)]
        ratio = np.std(by_set) / np.std(by_seed) if by_set and np.std(by_seed) > 0 else float("inf")
        kinds = [("training seed", by_seed, "")] + ([("labelled set", by_set, f"{ratio:.2f}")] if by_set else [])
        for name, values, note in kinds:
            print(f"| {n} | {name} | {np.mean(values):.4f} | {np.std(values):.4f} | {min(values):.4f} | "
                  f"{max(values):.4f} | {note} |", flush=True)
        print(f"({len(by_seed) + len(by_set)} trainings in {time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
