"""Label efficiency of each strategy in ``pairlab simulate`` results.json files, against ``random``.

    .venv/bin/python benchmarks/label_efficiency.py bench-out/sim-fashion/results.json [--baseline random]
    .venv/bin/python benchmarks/label_efficiency.py bench-out/sim-fashion-s*/results.json

Several files (e.g. one per seed, same dataset and protocol) are pooled: each strategy's runs are
the runs of every file, and the full-supervision figure is the mean over the files.

Prints, per strategy: the mean avg mAP at the last round, the labels at which its mean curve first
reaches the baseline's last-round mean mAP (linear interpolation between rounds; "not reached"
otherwise) and that count as a share of the baseline's last-round labels (the issue's target is
at most 50 %), the std over seeds of avg mAP at each round, and the median training and selection
seconds per round. Reads only the results file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from paired_aulc import protocol_key  # benchmarks/ is the script's own directory, first on sys.path


def mean_curve(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelled (R,), mean avg mAP (R,), std over seeds (R,)) over the rounds every run has."""
    rounds = min(len(run["rounds"]) for run in runs)
    labelled = np.array([runs[0]["rounds"][r]["labelled"] for r in range(rounds)], dtype=float)
    values = np.array([[run["rounds"][r]["avg"] for r in range(rounds)] for run in runs])
    return labelled, values.mean(axis=0), values.std(axis=0)


def labels_to_reach(labelled: np.ndarray, curve: np.ndarray, target: float) -> float | None:
    """The first label count at which the curve reaches ``target`` (interpolated), or None."""
    for i, value in enumerate(curve):
        if value >= target:
            if i == 0:
                return float(labelled[0])
            lo, hi = curve[i - 1], value
            return float(labelled[i - 1] + (target - lo) / (hi - lo) * (labelled[i] - labelled[i - 1]))
    return None


def pooled(documents: list[dict]) -> dict:
    """One document whose strategies hold the runs of every document (refused unless they share the
    dataset, pool, test split, initial set size, budget and rounds) and whose full supervision is
    the mean of theirs."""
    first = documents[0]
    for doc in documents[1:]:
        if protocol_key(doc) != protocol_key(first):
            raise SystemExit(f"label_efficiency: {protocol_key(doc)} and {protocol_key(first)} are different protocols")
    strategies: dict[str, list] = {}
    for doc in documents:
        for name, runs in doc["strategies"].items():
            strategies.setdefault(name, []).extend(runs)
    full = float(np.mean([doc["full_supervision"]["avg"] for doc in documents]))
    return {**first, "strategies": strategies, "full_supervision": {"avg": full},
            "seeds": [run["seed"] for run in next(iter(strategies.values()))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--baseline", default="random")
    args = parser.parse_args()
    doc = pooled([json.loads(p.read_text(encoding="utf-8")) for p in args.results])
    base_labels, base_curve, _ = mean_curve(doc["strategies"][args.baseline])
    target = base_curve[-1]
    print(f"{doc['dataset']}, seeds {doc['seeds']}: {args.baseline} reaches avg mAP {target:.4f} with "
          f"{base_labels[-1]:.0f} labels; full supervision {doc['full_supervision']['avg']:.4f}")
    print("| strategy | last-round avg mAP | labels to reach it | share of baseline's labels | "
          "std over seeds per round | median train s | median select s |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in doc["strategies"].items():
        labelled, curve, std = mean_curve(runs)
        reach = labels_to_reach(labelled, curve, target)
        share = "" if reach is None else f"{100 * reach / base_labels[-1]:.0f} %"
        train = np.median([r["train_seconds"] for run in runs for r in run["rounds"]])
        select = np.median([r["select_seconds"] for run in runs for r in run["rounds"][1:]] or [0.0])
        print(f"| {name} | {curve[-1]:.4f} | {'not reached' if reach is None else f'{reach:.0f}'} | {share} | "
              f"{', '.join(f'{s:.4f}' for s in std)} | {train:.1f} | {select:.1f} |")


if __name__ == "__main__":
    main()
