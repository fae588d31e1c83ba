"""How well does a two-component GaussianMixture turn audit values into P(clean)? (learner.audit.clean_probability)

    .venv/bin/python benchmarks/audit_clean_probability.py --dataset fashion --cache-dir CACHE

On the validation carve of ``bench_audit.py`` (never the test split), captions of a seeded 20 % and
10 % are swapped between pairs of different labels; the raw ``inconsistency`` values (no model needed)
and their ranks (what the rank-fused audit score is made of) are each fed to ``clean_probability``.
Prints the mean P(clean) and the count below 1/2 of swapped and of kept pairs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_audit import DATASETS, swap_captions  # noqa: E402
from app.bench.data import VALIDATION_FRACTION, carve_by_group, load_simulation_data, split_pool_and_test  # noqa: E402
from learner.audit import AuditConfig, cross_modal_consistency, clean_probability  # noqa: E402
from learner.selection.scoring import rank01  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="fashion")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.2, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "bench-out" / "cache", help="encoded-feature cache")
    args = parser.parse_args()
    source, fmt = DATASETS[args.dataset]
    data = load_simulation_data(source, fmt, cache_dir=args.cache_dir, carve_seed=10)
    pool, _ = split_pool_and_test(data.split, data.groups, 10)
    _, validation = carve_by_group(pool, data.groups, VALIDATION_FRACTION, 10)
    for noise in args.noise:
        text_row, swapped = swap_captions(data.labels[validation], noise, args.seed)
        image, text = data.image[validation], data.text[validation][text_row]
        inconsistency = 1.0 - cross_modal_consistency(image, text, AuditConfig(seed=args.seed))
        for name, values in (("raw inconsistency", inconsistency), ("inconsistency ranks", rank01(inconsistency))):
            p = clean_probability(values, seed=args.seed)
            print(f"noise {noise:.2f} {name:20s} swapped: mean {p[swapped].mean():.3f}, "
                  f"{(p[swapped] < 0.5).sum()}/{swapped.sum()} < 0.5;  kept: mean {p[~swapped].mean():.3f}, "
                  f"{(p[~swapped] < 0.5).sum()}/{(~swapped).sum()} < 0.5", flush=True)


if __name__ == "__main__":
    main()
