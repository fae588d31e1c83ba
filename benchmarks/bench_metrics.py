"""Speed of the retrieval metrics (``learner.metrics.evaluate_retrieval``) against the previous code path.

    .venv/bin/python benchmarks/bench_metrics.py                   # N = 5,000 and 20,000, 3 repeats
    .venv/bin/python benchmarks/bench_metrics.py --n 2000 --repeats 1

Each repeat evaluates one set of N synthetic pairs (``--dim`` embeddings, ``--classes`` labels, each
class on with probability 8 %) both ways, in this process, alternating which goes first:

- *current*: one ranking per query and direction (a value sort of int64 keys) serves mAP@all, mAP@50
  and P@10;
- *previous*: the code before session 11, a stable argsort for mAP@all and an argpartition and sort
  for each top-k metric, each recomputing the similarities.

Prints the median seconds of each, their ratio, and the largest difference in any metric (mAP@all
must agree to float rounding; a top-k metric may differ where the previous code's argpartition
picked among tied similarities at the cut, which the current code breaks in gallery order). Torch is
not used; BLAS runs on ``--threads`` threads.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner.metrics import _normalise, evaluate_retrieval  # noqa: E402


def _previous_relevance(q, g, ql, gl, k: int) -> np.ndarray:
    sim = q @ g.T
    relevant = (ql @ gl.T) > 0
    if k < sim.shape[1]:
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top.sort(axis=1)
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(top, order, axis=1)
    else:
        idx = np.argsort(-sim, axis=1, kind="stable")
    return np.take_along_axis(relevant, idx, axis=1)


def _previous_map(q, g, labels, k: int | None, chunk: int = 256) -> float:
    q, g, labels = _normalise(q), _normalise(g), np.asarray(labels, dtype=np.float32)
    k = g.shape[0] if k is None else min(k, g.shape[0])
    ranks, total = np.arange(1, k + 1, dtype=np.float64), 0.0
    for s in range(0, q.shape[0], chunk):
        rel = _previous_relevance(q[s:s + chunk], g, labels[s:s + chunk], labels, k)
        hits = np.cumsum(rel, axis=1)
        n_rel = hits[:, -1]
        total += np.where(n_rel > 0, (hits / ranks * rel).sum(1) / np.maximum(n_rel, 1), 0.0).sum()
    return float(total / q.shape[0])


def _previous_precision(q, g, labels, k: int, chunk: int = 256) -> float:
    q, g, labels = _normalise(q), _normalise(g), np.asarray(labels, dtype=np.float32)
    k = min(k, g.shape[0])
    total = sum(_previous_relevance(q[s:s + chunk], g, labels[s:s + chunk], labels, k).mean(1).sum()
                for s in range(0, q.shape[0], chunk))
    return float(total / q.shape[0])


def previous_evaluate(mu_image, mu_text, labels) -> dict[str, float]:
    out = {}
    for suffix, k in (("", None), ("@50", 50)):
        i2t, t2i = _previous_map(mu_image, mu_text, labels, k), _previous_map(mu_text, mu_image, labels, k)
        out.update({f"i2t{suffix}": i2t, f"t2i{suffix}": t2i, f"avg{suffix}": 0.5 * (i2t + t2i)})
    i2t, t2i = _previous_precision(mu_image, mu_text, labels, 10), _previous_precision(mu_text, mu_image, labels, 10)
    out.update({"i2t_p@10": i2t, "t2i_p@10": t2i, "p@10": 0.5 * (i2t + t2i)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with threadpool_limits(limits=args.threads):
        for n in args.n:
            rng = np.random.default_rng(n)
            mu_image = rng.normal(size=(n, args.dim)).astype(np.float32)
            mu_text = mu_image + rng.normal(size=(n, args.dim)).astype(np.float32)
            labels = (rng.random((n, args.classes)) < 0.08).astype(np.float32)
            seconds = {"current": [], "previous": []}
            results = {}
            for r in range(args.repeats):
                for name in (("current", "previous") if r % 2 == 0 else ("previous", "current")):
                    run = evaluate_retrieval if name == "current" else previous_evaluate
                    t = time.perf_counter()
                    results[name] = run(mu_image, mu_text, labels)
                    seconds[name].append(time.perf_counter() - t)
            current, previous = statistics.median(seconds["current"]), statistics.median(seconds["previous"])
            diff = max(abs(results["current"][k] - results["previous"][k]) for k in results["previous"])
            print(f"N = {n}: current {current:.2f} s, previous {previous:.2f} s (medians of {args.repeats}), "
                  f"previous / current = {previous / current:.2f}; largest metric difference {diff:.2e}", flush=True)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()
