"""Benchmark scoring + ``ascmr`` selection on a synthetic pool (DESIGN §9: 1M pairs in about a minute).

    .venv/bin/python benchmarks/bench_select.py                 # 1,000,000 pairs, budget 1 %
    .venv/bin/python benchmarks/bench_select.py --n 100000      # quicker development run

Three figures in one run, each with its peak RSS:

1. ``pairlab select`` itself (unless ``--no-pipeline``): a workspace of N pairs imported from a synthetic
   clustered features file (``bench_scale.synthetic_pool``: 1 % labelled, 2 % test), a model trained by
   ``pairlab train --epochs 1``, then ``pairlab select --strategy ascmr --budget <1 % of the pool>`` in a
   fresh process, timed from outside (wall, start-up included) with the ``select_seconds`` the round
   records and the child's own peak RSS (VmHWM). This is the path an operator runs: memory-mapped
   features, batched inference with the configured MC samples, streamed scoring.
2. The strategy on ready-made arrays (the "in-memory" figure): the learner's sizes (d = 256, C = 80,
   K = 4 MC samples per modality, float32, generated in chunks), 1 % labelled, ``ascmr`` selecting
   ``--budget`` (1 %) of the pool; peak RSS of this process after it.
3. For scale, a plain (N_pool, d) x (d, budget) float32 matmul (in row chunks, the result discarded)
   and a straightforward greedy core-set (k-center greedy on mu_z; its two parts are timed on a slice
   and extrapolated linearly, see below).
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from sklearn.metrics import pairwise_distances_argmin_min
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learner.outputs import InferenceOutputs  # noqa: E402
from learner.selection import get_strategy  # noqa: E402
from learner.selection.density import greedy_coreset  # noqa: E402
from learner.selection.scoring import fused_means  # noqa: E402

CHUNK = 65536


def pipeline_figure(n: int, folder: Path, seed: int, workspace: str | None) -> float:
    """Build a workspace of n pairs (or reuse ``workspace``, e.g. one kept by ``bench_scale.py --keep``),
    train one epoch, time ``pairlab select``; its wall seconds."""
    import json

    from sqlalchemy import select

    from benchmarks.bench_scale import run_step, synthetic_pool
    from storage.models import Round
    from storage.store import open_store

    ws, source = Path(workspace) if workspace else folder / "ws", folder / "pool.npz"
    if workspace is None:
        synthetic_pool(source, n, image_dim=256, text_dim=128, classes=20, groups=200, labelled=0.01, test=0.02,
                       seed=seed)
        for name, argv in (("init", ["init", str(ws)]),
                           ("import", ["import", str(ws), str(source), "--format", "features"]),
                           ("train --epochs 1", ["train", str(ws), "--epochs", "1"])):
            if run_step(name, argv)["rc"] != 0:
                raise SystemExit(f"pairlab {name} failed")
        source.unlink()
    budget = max(1, round(0.01 * n * 0.97))
    row = run_step(f"pairlab select ascmr --budget {budget}",
                   ["select", str(ws), "--strategy", "ascmr", "--budget", str(budget)])
    store = open_store(ws)
    with store.db.read() as s:
        params = s.scalar(select(Round.params).order_by(Round.number.desc()).limit(1))
    store.close()
    print(f"pairlab select (the whole run_selection path) on {n} pairs: {row['wall_s']:.2f} s wall in a fresh "
          f"process ({params['select_seconds']:.2f} s inside run_selection), peak RSS {row['peak_rss_mib']:.0f} MiB; "
          + json.dumps({k: params[k] for k in ("selected_by", "budget")}), flush=True)
    return row["wall_s"]


def synthetic_outputs(n: int, d: int, c: int, k: int, seed: int) -> InferenceOutputs:
    """Clustered synthetic outputs: 1000 semantic groups, text near image, float32, in chunks."""
    rng = np.random.default_rng(seed)
    groups = rng.standard_normal((1000, d), dtype=np.float32)
    groups /= np.linalg.norm(groups, axis=1, keepdims=True)
    protos = rng.standard_normal((1000, c), dtype=np.float32) * 3 - 2              # class logits per group
    arr = {name: np.empty((n, d), np.float32) for name in ("mu_image", "mu_text", "var_image", "var_text")}
    arr |= {name: np.empty((n, c), np.float32) for name in ("probs_image", "probs_text")}
    arr |= {name: np.empty((n, k, c), np.float32) for name in ("mc_probs_image", "mc_probs_text")}
    for s in range(0, n, CHUNK):
        m = min(CHUNK, n - s)
        g = rng.integers(0, len(groups), m)
        for mod, spread in (("image", 0.08), ("text", 0.10)):
            mu = groups[g] + spread * rng.standard_normal((m, d), dtype=np.float32)
            arr[f"mu_{mod}"][s:s + m] = mu / np.linalg.norm(mu, axis=1, keepdims=True)
            arr[f"var_{mod}"][s:s + m] = rng.uniform(1e-4, 4e-3, (m, d)).astype(np.float32)
            logit = protos[g] + rng.standard_normal((m, c), dtype=np.float32)
            arr[f"probs_{mod}"][s:s + m] = 1 / (1 + np.exp(-logit))
            sample = logit[:, None, :] + 0.5 * rng.standard_normal((m, k, c), dtype=np.float32)
            arr[f"mc_probs_{mod}"][s:s + m] = 1 / (1 + np.exp(-sample))
    return InferenceOutputs(**arr, match_a=8.0, match_b=4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="pairs in total (default 1,000,000)")
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--mc", type=int, default=4, help="MC samples per modality")
    parser.add_argument("--budget", type=float, default=0.01, help="fraction of the pool to select")
    parser.add_argument("--labelled", type=float, default=0.01, help="fraction of rows already labelled")
    parser.add_argument("--coreset-picks", type=int, default=100, help="picks timed for the core-set")
    parser.add_argument("--coreset-labelled", type=int, default=1000,
                        help="labelled rows the core-set's nearest-labelled search is timed on")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads (default: library)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                        help="skip the 'pairlab select' figure (workspace, training, select)")
    parser.add_argument("--folder", help="where the pipeline workspace goes (default: a temporary folder)")
    parser.add_argument("--workspace", help="time 'pairlab select' on this existing workspace (with a model) "
                                            "instead of building one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="  [log] %(message)s")
    t_pipeline = None
    if args.pipeline:
        with tempfile.TemporaryDirectory(dir=args.folder, prefix="bench-select-") as folder:
            t_pipeline = pipeline_figure(args.n, Path(folder), args.seed, args.workspace)
    logging.getLogger("learner.selection").setLevel(logging.DEBUG)

    t0 = time.perf_counter()
    outputs = synthetic_outputs(args.n, args.d, args.classes, args.mc, args.seed)
    perm = np.random.default_rng(args.seed + 1).permutation(args.n)
    n_lab = int(round(args.labelled * args.n))
    labelled, pool = np.sort(perm[:n_lab]), np.sort(perm[n_lab:])
    budget = max(1, int(round(args.budget * len(pool))))
    print(f"generated N={args.n} d={args.d} C={args.classes} K={args.mc}: pool {len(pool)}, "
          f"labelled {n_lab}, budget {budget} ({time.perf_counter() - t0:.1f} s)")

    with threadpool_limits(args.threads) if args.threads else nullcontext():
        t, cpu = time.perf_counter(), time.process_time()
        selection = get_strategy("ascmr").query(outputs, pool, labelled, budget, seed=args.seed)
        t_ascmr, cpu = time.perf_counter() - t, time.process_time() - cpu
        print(f"scoring + ascmr select {budget} of {len(pool)}: {t_ascmr:.2f} s wall, {cpu:.2f} s CPU "
              f"({len(selection.indices)} picked from {len({e['cluster'] for e in selection.explanation})} clusters); "
              f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        if t_pipeline is not None:
            print(f"pairlab select / in-memory ascmr = {t_pipeline / t_ascmr:.2f}")

        x = fused_means(outputs, np.concatenate([pool, labelled]))
        w = np.random.default_rng(0).standard_normal((args.d, budget), dtype=np.float32)
        t = time.perf_counter()
        for s in range(0, len(pool), 4096):
            x[s:s + 4096] @ w
        t_mm = time.perf_counter() - t
        print(f"plain matmul ({len(pool)}, {args.d}) x ({args.d}, {budget}) float32: {t_mm:.2f} s; "
              f"ascmr / matmul = {t_ascmr / t_mm:.2f}"
              + (f"; pairlab select / matmul = {t_pipeline / t_mm:.2f}" if t_pipeline is not None else ""))

        # k-center greedy = one nearest-labelled search (O(N |L| d)) + one O(N d) pass per pick.  The
        # search is timed against a sample of the labelled rows and scaled by |L| (it is linear in
        # |L|); the passes are timed without labelled rows for 1 and --coreset-picks picks.
        pool_pos, lab_pos = np.arange(len(pool)), np.arange(len(pool), len(x))
        sample = lab_pos[:max(1, min(len(lab_pos), args.coreset_labelled))]
        t = time.perf_counter()
        pairwise_distances_argmin_min(x[pool_pos], x[sample])
        t_init = (time.perf_counter() - t) * len(lab_pos) / len(sample) if len(lab_pos) else 0.0
        no_labels = np.zeros(0, dtype=np.int64)
        picks = max(1, min(args.coreset_picks, budget - 1))
        t = time.perf_counter()
        greedy_coreset(x, pool_pos, no_labels, 1)
        t_one = time.perf_counter() - t
        t = time.perf_counter()
        greedy_coreset(x, pool_pos, no_labels, 1 + picks)
        per_pick = max(time.perf_counter() - t - t_one, 0.0) / picks
        t_core = t_init + t_one + (budget - 1) * per_pick
        print(f"greedy core-set on the same pool: nearest-labelled search ~{t_init:.1f} s "
              f"(timed on {len(sample)} of {len(lab_pos)} labelled rows, scaled), {per_pick * 1e3:.0f} ms per pick "
              f"(timed over {picks} picks) -> {budget} picks ~{t_core:.0f} s (extrapolated); "
              f"ascmr / core-set = {t_ascmr / t_core:.3f}")

if __name__ == "__main__":
    main()
