"""Outputs of ``pairlab simulate``: ``results.json`` (DESIGN §6 schema), ``learning_curves.png``, ``summary.md``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLDS = (0.90, 0.95)
BASELINE = "random"  # the strategy every other one is paired with in the summary


def curve(runs: list[dict[str, Any]], metric: str = "avg") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean labelled fraction, mean and std of ``metric`` per round over seeds: three (R,) arrays."""
    fractions = np.array([[r["fraction"] for r in run["rounds"]] for run in runs])
    values = np.array([[r[metric] for r in run["rounds"]] for run in runs])
    return fractions.mean(0), values.mean(0), values.std(0)


def area_under_curve(fraction: np.ndarray, value: np.ndarray) -> float:
    """Trapezoidal area under mAP-vs-fraction, divided by the fraction range (so it reads as a mean mAP)."""
    if len(fraction) < 2:
        return float(value[0])
    widths = np.diff(fraction)
    return float(np.sum(widths * (value[1:] + value[:-1]) / 2) / (fraction[-1] - fraction[0]))


def first_reaching(fraction: np.ndarray, relative: np.ndarray, threshold: float) -> float | None:
    """The first labelled fraction whose mean mAP is at least ``threshold`` of full supervision, or None."""
    hits = np.nonzero(relative >= threshold)[0]
    return float(fraction[hits[0]]) if len(hits) else None


def evaluated_on(results: dict[str, Any]) -> str:
    """The split the curves were measured on: "test", or "validation" for a tuning run."""
    return results.get("protocol", {}).get("evaluated_on", "test")


def seed_areas(runs: list[dict[str, Any]], metric: str = "avg") -> dict[int, float]:
    """Area under each seed's own learning curve: seed -> AULC."""
    return {run["seed"]: area_under_curve(np.array([r["fraction"] for r in run["rounds"]]),
                                          np.array([r[metric] for r in run["rounds"]])) for run in runs}


def paired_area_differences(runs: list[dict[str, Any]], baseline_runs: list[dict[str, Any]]) -> dict[int, float]:
    """seed -> AULC of ``runs`` minus AULC of ``baseline_runs``, for the seeds both ran. Runs of one
    simulation share each seed's initial set, so the pairing removes the seed's own luck."""
    mine, theirs = seed_areas(runs), seed_areas(baseline_runs)
    return {seed: mine[seed] - theirs[seed] for seed in sorted(mine.keys() & theirs.keys())}


def summarise(results: dict[str, Any], baseline: str = BASELINE) -> list[dict[str, Any]]:
    """Per strategy: AULC (of the mean curve, and its std over seeds), % of full supervision per
    round, fractions reaching 90 % and 95 %, and, when ``baseline`` ran, the mean per-seed AULC
    difference to it with the number of seeds won (:func:`paired_area_differences`). Best AULC first."""
    full = results["full_supervision"]["avg"]
    reference = results["strategies"].get(baseline)
    rows = []
    for name, runs in results["strategies"].items():
        fraction, mean, std = curve(runs)
        relative = mean / full if full > 0 else np.zeros_like(mean)
        areas = seed_areas(runs)
        row = {"strategy": name, "aulc": area_under_curve(fraction, mean), "aulc_std": float(np.std(list(areas.values()))),
               "fractions": fraction.tolist(), "mean": mean.tolist(), "std": std.tolist(), "relative": relative.tolist(),
               **{f"reach_{int(t * 100)}": first_reaching(fraction, relative, t) for t in THRESHOLDS}}
        if reference is not None and name != baseline:
            diffs = list(paired_area_differences(runs, reference).values())
            row["vs_baseline"] = (float(np.mean(diffs)), sum(d > 0 for d in diffs), len(diffs))
        rows.append(row)
    return sorted(rows, key=lambda r: -r["aulc"])


def summary_markdown(results: dict[str, Any]) -> str:
    rows = summarise(results)
    full = results["full_supervision"]
    n_rounds = max(len(r["fractions"]) for r in rows)
    fmt_frac = lambda f: "not reached" if f is None else f"{100 * f:.2f} %"  # noqa: E731
    lines = [
        f"# Simulation on {results['dataset']}",
        "",
        f"Pool {results['pool_size']} pairs, {evaluated_on(results)} {results['test_size']} pairs, seeds {results['seeds']}, "
        f"encoders {results['encoders']['image']} / {results['encoders']['text']}.",
        f"Full supervision (all pool labels): mAP i2t {full['i2t']:.4f}, t2i {full['t2i']:.4f}, avg {full['avg']:.4f}.",
        "",
        "Area under the learning curve (mean avg mAP over the labelled-fraction range), the fraction of "
        "full-supervision mAP at each round (mean over seeds), and the labelled fraction at which each "
        "strategy first reaches 90 % and 95 % of full supervision.",
        "",
        f"| strategy | AULC ± std | AULC − {BASELINE} (seeds won) | " + " | ".join(f"round {i}" for i in range(n_rounds))
        + " | 90 % at | 95 % at |",
        "|---|---|---|" + "---|" * n_rounds + "---|---|",
    ]
    for r in rows:
        cells = [f"{100 * rel:.1f} % ({100 * f:.2f} %)" for rel, f in zip(r["relative"], r["fractions"])]
        cells += [""] * (n_rounds - len(cells))
        versus = ""
        if "vs_baseline" in r:
            diff, won, seeds = r["vs_baseline"]
            versus = f"{diff:+.4f} ({won}/{seeds})"
        lines.append(f"| {r['strategy']} | {r['aulc']:.4f} ± {r['aulc_std']:.4f} | {versus} | " + " | ".join(cells)
                     + f" | {fmt_frac(r['reach_90'])} | {fmt_frac(r['reach_95'])} |")
    lines += ["", "Cells: % of full-supervision avg mAP (labelled fraction of the pool). AULC ± std: the area "
              f"under the mean curve and the std of the per-seed areas; AULC − {BASELINE}: the mean per-seed "
              f"difference to {BASELINE} and the number of seeds in which the strategy's area was larger."]
    notes = results.get("protocol", {}).get("notes", [])
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot_learning_curves(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, runs in results["strategies"].items():
        fraction, mean, std = curve(runs)
        ax.plot(100 * fraction, mean, marker="o", markersize=3, label=name)
        ax.fill_between(100 * fraction, mean - std, mean + std, alpha=0.15)
    ax.axhline(results["full_supervision"]["avg"], color="black", linestyle="--", label="full supervision")
    ax.set_xlabel("labelled fraction of the pool (%)")
    ax.set_ylabel(f"{evaluated_on(results)} mAP@all (avg of i2t, t2i)")
    ax.set_title(f"{results['dataset']}: mean ± 1 std over seeds {results['seeds']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_reports(results: dict[str, Any], out_dir: Path) -> None:
    """Write the three outputs atomically (each to a temp name, then renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.json", json.dumps(results, indent=1)), ("summary.md", summary_markdown(results))):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
    plot_learning_curves(results, out_dir / "learning_curves.png")
