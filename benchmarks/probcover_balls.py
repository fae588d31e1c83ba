"""What ProbCover's first batch looks like on a real pool: radius, ball sizes, ties and spread of the picks.

    .venv/bin/python benchmarks/probcover_balls.py ../shared/datasets/fashion/manifest.jsonl --format manifest \
        --initial 0.005 --budget 0.005 --seed 0 --cache-dir bench-out/cache-fashion

Trains round 0 exactly as ``pairlab simulate`` does for ``--seed`` (the initial set and its fixed
validation slice), infers the pool, then runs ``probcover``'s pieces and prints: the chosen delta and
ball purity, ball sizes against the kNN graph's cap (``max_degree``), how many pool rows tie at the
first pick's gain, and for the batch the share of the pool covered, the number of distinct classes
among the picks against a uniform random batch of the same size (mean of 20 draws), and where the
picks sit in pool order (a batch bunched at the start of the pool shows a tie broken by position).
Reads the pool only; the test split is never touched.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


EMBEDDINGS = ("mu_image", "mu_text", "var_image", "var_text")


def _load_embeddings(path: Path):
    """Round 0's embeddings from ``--outputs``, as InferenceOutputs without class probabilities
    (ProbCover reads the fused means only)."""
    from learner.outputs import InferenceOutputs

    arrays = np.load(path)
    n = len(arrays["mu_image"])
    empty = np.zeros((n, 1), dtype=np.float32)
    return InferenceOutputs(**{name: arrays[name] for name in EMBEDDINGS}, probs_image=empty, probs_text=empty,
                            mc_probs_image=empty[:, :0, None], mc_probs_text=empty[:, :0, None],
                            match_a=1.0, match_b=0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--format", default="manifest")
    parser.add_argument("--initial", type=float, default=0.005)
    parser.add_argument("--budget", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--outputs", type=Path, help="an .npz that keeps round 0's embeddings between runs")
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from app.bench.data import count, load_simulation_data, split_pool_and_test
    from app.bench.simulate import validation_slice
    from learner.inference import InferenceConfig, infer
    from learner.selection.coverage import ProbcoverConfig, ProbcoverStrategy, _ball_graph
    from learner.selection.scoring import fused_means
    from learner.training import TrainConfig, train_model

    torch.set_num_threads(2)
    data = load_simulation_data(args.source, args.format, cache_dir=args.cache_dir, carve_seed=args.seed)
    pool, _ = split_pool_and_test(data.split, data.groups, args.seed)
    n_initial, budget = count(args.initial, len(pool)), count(args.budget, len(pool))
    initial = np.random.default_rng(args.seed).choice(len(pool), size=n_initial, replace=False)
    labelled = np.zeros(len(pool), dtype=bool)
    labelled[initial] = True
    if args.outputs and args.outputs.exists():
        outputs = _load_embeddings(args.outputs)
    else:
        result = train_model(data.image[pool], data.text[pool], data.labels[pool], labelled,
                             replace(TrainConfig(), seed=args.seed), validation=validation_slice(initial, args.seed))
        inference = InferenceConfig()
        outputs = infer(result.model, data.image[pool], data.text[pool], mc_samples=inference.mc_samples,
                        batch_size=inference.batch_size, seed=args.seed)
        if args.outputs:
            np.savez(args.outputs, **{name: getattr(outputs, name) for name in EMBEDDINGS})
    free, covered_rows = np.flatnonzero(~labelled), np.flatnonzero(labelled)
    cfg = ProbcoverConfig()
    with threadpool_limits(2):
        selection = ProbcoverStrategy().query(outputs, free, covered_rows, budget, seed=args.seed)
        x = fused_means(outputs, np.concatenate([free, covered_rows]))
        dist, _ = _ball_graph(x, cfg.max_degree)
    first = selection.explanation[0]
    delta = first["delta"]
    sizes = (dist < delta).sum(axis=1)
    classes = data.labels[pool].argmax(axis=1)
    picks = selection.indices
    rng = np.random.default_rng(args.seed)
    random_distinct = np.mean([len(np.unique(classes[rng.choice(free, size=budget, replace=False)]))
                               for _ in range(20)])
    position = np.searchsorted(np.sort(free), picks) / len(free)
    print(f"pool {len(pool)}, labelled {len(covered_rows)}, batch {budget}, kNN cap {cfg.max_degree}")
    print(f"delta {delta:.4f} (ball purity {first['ball_purity']}), pseudo-clusters {first['pseudo_clusters']}")
    print(f"ball size: median {np.median(sizes):.0f}, mean {sizes.mean():.1f}; "
          f"{np.mean(sizes >= cfg.max_degree):.1%} of balls at the cap")
    print(f"first pick's gain {first['newly_covered']}; pool rows with that gain before the batch: "
          f"{int(np.sum(selection.scores == first['newly_covered']))}")
    print(f"covered after the batch: {selection.explanation[-1]['covered_before']:.1%} before the last pick; "
          f"random fallback picks: {sum(e['all_covered_random'] for e in selection.explanation)}")
    print(f"distinct classes among the picks {len(np.unique(classes[picks]))} vs random batch "
          f"{random_distinct:.1f} (mean of 20)")
    print(f"pool-order position of the picks (0 = first free row, 1 = last): median {np.median(position):.2f}, "
          f"share in the first 10 %: {np.mean(position < 0.1):.1%}")


if __name__ == "__main__":
    main()
