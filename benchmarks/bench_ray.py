"""The Ray engine's scaling: the same encode job on 1 and on 2 Ray workers, next to this process's own path.

    .venv/bin/python benchmarks/bench_ray.py [--images 1000] [--repeats 3] [--workers 1,2] [--json OUT]

The job: the first ``--images`` fashion images (``../shared/datasets/fashion/images``, sorted) through
EfficientNet-Lite0 with the cache off, i.e. ``app.services.ray_engine.ray_embedder`` - the embed step of
``pairlab encode --engine ray`` - on a throw-away local Ray with ``num_cpus = workers`` (one actor per
CPU, one torch thread each, decoding in the actor's own thread). Each run's wall time includes starting
the actors and loading the model in each (what ``pairlab encode`` pays); Ray's own start-up is timed
apart, and the steady rate counts the images from the first result to the last. Baseline in the same process: ``encoder.embed_images`` locally (2 decode threads, 2 single-threaded
inference workers, the default). Runs alternate between the configurations; medians are reported, with
the load average before and after, because the machine may be shared. Scaling efficiency =
rate(2 workers) / (2 x rate(1 worker)); the issue's target is rate(2) >= 1.6 x rate(1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.services.ray_engine import RayEngine, ray_embedder, ray_session  # noqa: E402
from learner.encoders import get_encoder  # noqa: E402

FASHION = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fashion" / "images"


def fashion_images(n: int) -> list[str]:
    images = sorted(FASHION.glob("*.jpg"))[:n]
    if len(images) < n:
        raise SystemExit(f"bench_ray: need {n} images under {FASHION}, found {len(images)}")
    return [str(p) for p in images]


def ray_run(encoder, paths: list[str], workers: int) -> dict[str, float]:
    """One encode on a fresh local Ray of ``workers`` CPUs: Ray start-up, the job's wall seconds, and the
    steady rate (images/s from the first result to the last, leaving out starting the actors)."""
    start = time.perf_counter()
    with ray_session(RayEngine(workers=workers)) as actors:
        started = time.perf_counter()
        reports: list[tuple[float, int]] = []
        features = ray_embedder(encoder, "image", actors)(
            paths, progress=lambda done, total: reports.append((time.perf_counter(), done)))
        seconds = time.perf_counter() - started
    if features.shape != (len(paths), encoder.dim):
        raise SystemExit(f"bench_ray: got features {features.shape}, expected {(len(paths), encoder.dim)}")
    (t_first, n_first), (t_last, n_last) = reports[0], reports[-1]
    return {"ray_start_s": started - start, "seconds": seconds, "first_result_s": t_first - started,
            "steady_images_per_s": (n_last - n_first) / max(t_last - t_first, 1e-9)}


def local_run(encoder, paths: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    encoder.embed_images(paths)
    return {"seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    paths = fashion_images(args.images)
    encoder = get_encoder("efficientnet-lite0")
    encoder.embed_images(paths[:32])  # load and warm the local model once (actors load their own)
    worker_counts = [int(w) for w in args.workers.split(",")]
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {"local": [], **{f"ray-{w}": [] for w in worker_counts}}
    for repeat in range(args.repeats):
        for w in worker_counts:
            runs[f"ray-{w}"].append(ray_run(encoder, paths, w))
            print(f"repeat {repeat}: ray {w} worker(s): {runs[f'ray-{w}'][-1]}", flush=True)
        runs["local"].append(local_run(encoder, paths))
        print(f"repeat {repeat}: local: {runs['local'][-1]}", flush=True)
    load_after = os.getloadavg()
    summary = {}
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        summary[name] = {"median_seconds": round(seconds, 2), "images_per_s": round(len(paths) / seconds, 2),
                         "runs_seconds": [round(r["seconds"], 2) for r in results]}
        if name.startswith("ray"):
            for key in ("ray_start_s", "first_result_s", "steady_images_per_s"):
                summary[name][f"median_{key}"] = round(statistics.median(r[key] for r in results), 2)
    if {"ray-1", "ray-2"} <= summary.keys():
        for label, key in (("", "images_per_s"), ("steady_", "median_steady_images_per_s")):
            speedup = summary["ray-2"][key] / summary["ray-1"][key]
            summary[f"{label}speedup_2_vs_1"] = round(speedup, 3)
            summary[f"{label}scaling_efficiency"] = round(speedup / 2, 3)
    summary.update(images=len(paths), repeats=args.repeats, cpus=os.cpu_count(),
                   loadavg_before=[round(x, 2) for x in load_before], loadavg_after=[round(x, 2) for x in load_after])
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
