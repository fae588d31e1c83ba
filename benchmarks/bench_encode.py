"""Encoder throughput on coco-mini: EfficientNet-Lite0 with parallel vs sequential decoding, and tfidf.

    .venv/bin/python benchmarks/bench_encode.py [--items 300] [--repeats 1] [--captions 10000] [--json OUT]

Image part: the 159 coco-mini images, repeated to ``--items`` paths, go through
``encoder.embed_images`` (the uncached path: no content hashing, no deduplication)
in the same process in three modes: the default parallel path (``decode_workers=2``:
decode on a thread pool; ``inference_workers=2``: two single-threaded forward passes side
by side), sequential decoding with the same two inference workers, and the baseline
(decode in the main thread, one forward pass at a time with torch's default threads).
The model is loaded and warmed up first; with ``--repeats > 1`` the runs alternate and
the best of each is kept. Text part: tfidf fit + transform on ``--captions`` captions
made by splicing the first half of one coco-mini caption onto the second half of another.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from learner.encoders import TfidfEncoder, get_encoder

COCO = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco-mini"


def image_paths(n_items: int) -> list[Path]:
    """The coco-mini images repeated (in order) to ``n_items`` paths."""
    images = sorted(COCO.glob("*2017/*.jpg"))
    if not images:
        raise SystemExit(f"bench_encode: no images under {COCO}")
    return [images[i % len(images)] for i in range(n_items)]


def spliced_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct-ish captions: first half of one real caption + second half of another."""
    captions = []
    for split in ("train", "val"):
        data = json.loads((COCO / "annotations" / f"captions_{split}2017.json").read_text(encoding="utf-8"))
        captions += [a["caption"].strip().split() for a in data["annotations"]]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.choice(captions), rng.choice(captions)
        out.append(" ".join(a[: len(a) // 2] + b[len(b) // 2:]))
    return out


#: label -> (decode_workers, inference_workers)
MODES = {
    "parallel (2 decode threads, 2 inference workers; the default)": (2, 2),
    "sequential decode, 2 inference workers": (0, 2),
    "baseline (sequential decode, 1 inference pass at a time)": (0, 1),
}


def images_per_second(decode: int, infer: int, paths: list[Path], batch_size: int) -> tuple[float, float]:
    """(wall-clock images/s, images per CPU-second of this process) for one uncached run."""
    encoder = get_encoder(
        "efficientnet-lite0", decode_workers=decode, inference_workers=infer, batch_size=batch_size,
    )
    encoder.embed_images(paths[:batch_size])  # load + warm up
    wall, cpu = time.perf_counter(), time.process_time()
    encoder.embed_images(paths)
    return len(paths) / (time.perf_counter() - wall), len(paths) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--captions", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    paths = image_paths(args.items)
    print(f"cpus={os.cpu_count()} torch_threads={torch.get_num_threads()} loadavg={os.getloadavg()[0]:.2f} "
          f"items={len(paths)} batch_size={args.batch_size}")
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in MODES}
    for _ in range(args.repeats):
        for label, (decode, infer) in MODES.items():
            runs[label].append(images_per_second(decode, infer, paths, args.batch_size))
    best = {label: max(r[0] for r in results) for label, results in runs.items()}
    for label, results in runs.items():
        print(f"efficientnet-lite0 {label}: {best[label]:6.1f} images/s  runs={[round(r[0], 1) for r in results]}  "
              f"images per CPU-second={[round(r[1], 1) for r in results]}")
    parallel, baseline = best[next(iter(MODES))], best[list(MODES)[-1]]
    print(f"speed-up parallel/baseline: {parallel / baseline:.2f}x")

    texts = spliced_captions(args.captions)
    start = time.perf_counter()
    encoder = TfidfEncoder().fit(texts)
    fitted = time.perf_counter()
    feats = encoder.embed_texts(texts)
    done = time.perf_counter()
    print(f"tfidf on {len(texts)} captions: fit {fitted - start:.2f} s, transform {done - fitted:.2f} s, "
          f"total {done - start:.2f} s -> {feats.shape[1]} dims")
    print(f"loadavg after: {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "items": len(paths), "loadavg": os.getloadavg()[0],
            "images_per_s": {label: [r[0] for r in results] for label, results in runs.items()},
            "images_per_cpu_s": {label: [r[1] for r in results] for label, results in runs.items()},
            "speedup_parallel_over_baseline": parallel / baseline, "tfidf_captions": len(texts), "tfidf_fit_s": fitted - start,
            "tfidf_transform_s": done - fitted, "tfidf_dim": int(feats.shape[1]),
        }, indent=2))


if __name__ == "__main__":
    main()
