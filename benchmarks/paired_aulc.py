"""Paired per-seed comparison of strategies over one or more ``pairlab simulate`` results.json files.

    .venv/bin/python benchmarks/paired_aulc.py bench-out/tune-wiki/results.json bench-out/tune2-wiki/results.json

Within one results file every strategy shares the seed's initial set, pool and evaluation split, so
the difference of two strategies' areas under the learning curve (AULC) for the same seed removes
the seed's own luck. Files that ran the same protocol on the same seed list are merged first (their
runs share the same initial sets); seeds pooled from different protocols are treated as independent
pairs (a seed that appears twice counts once, from the first file that has both strategies). Prints, per
strategy, the mean paired AULC difference to the baseline, its standard error, the seeds won and
the number of seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.bench.reports import paired_area_differences  # noqa: E402


def protocol_key(doc: dict) -> tuple:
    """What two results files must share to be compared: dataset, pool, test split, where they were
    evaluated, initial set size, budget, rounds and warm start."""
    protocol = doc.get("protocol", {})
    return (doc["dataset"], doc["pool_size"], doc["test_size"], protocol.get("evaluated_on"), protocol.get("initial"),
            protocol.get("budget"), protocol.get("rounds"), protocol.get("warm_start"))


def merge_same_protocol(documents: list[dict]) -> list[dict]:
    """Merge the strategies of files that ran the same protocol on the same seeds (same dataset, pool,
    evaluation split, initial set size, budget and rounds; with ``--evaluate-on validation`` the
    carve follows the first seed): their runs share each seed's initial set and can be paired."""
    merged: dict[tuple, dict] = {}
    for doc in documents:
        target = merged.setdefault((tuple(doc["seeds"]), *protocol_key(doc)), {**doc, "strategies": {}})
        for name, runs in doc["strategies"].items():
            target["strategies"].setdefault(name, runs)
    return list(merged.values())


def paired_differences(documents: list[dict], strategy: str, baseline: str) -> list[float]:
    """AULC(strategy) - AULC(baseline) for every seed that ran both, first file first."""
    diffs: dict[int, float] = {}
    for doc in documents:
        runs = doc["strategies"]
        if strategy in runs and baseline in runs:
            for seed, diff in paired_area_differences(runs[strategy], runs[baseline]).items():
                diffs.setdefault(seed, diff)
    return list(diffs.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--baseline", default="random")
    args = parser.parse_args()
    documents = merge_same_protocol([json.loads(p.read_text(encoding="utf-8")) for p in args.results])
    names = list(dict.fromkeys(name for doc in documents for name in doc["strategies"]))
    rows = []
    for name in names:
        if name == args.baseline:
            continue
        diffs = np.array(paired_differences(documents, name, args.baseline))
        if len(diffs):
            sem = diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
            rows.append((diffs.mean(), sem, int((diffs > 0).sum()), len(diffs), name))
    print(f"| strategy | AULC − {args.baseline} (mean ± s.e. over seeds) | seeds won |")
    print("|---|---|---|")
    for mean, sem, won, n, name in sorted(rows, reverse=True):
        print(f"| {name} | {mean:+.4f} ± {sem:.4f} | {won}/{n} |")


if __name__ == "__main__":
    main()
