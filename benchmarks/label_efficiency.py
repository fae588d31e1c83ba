"""Label efficiency of each strategy in a ``pairlab simulate`` results.json, against ``random``.

    .venv/bin/python benchmarks/label_efficiency.py bench-out/sim-fashion/results.json [--baseline random]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--baseline", default="random")
    args = parser.parse_args()
    doc = json.loads(args.results.read_text(encoding="utf-8"))
    base_labels, base_curve, _ = mean_curve(doc["strategies"][args.baseline])
    target = base_curve[-1]
    print(f"{doc['dataset']}: {args.baseline} reaches avg mAP {target:.4f} with {base_labels[-1]:.0f} labels; "
          f"full supervision {doc['full_supervision']['avg']:.4f}")
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
