"""The labelled dataset a simulation replays: features, oracle labels, splits, and how pool and test are carved.

Without a test split, one is carved off by whole images (``groups``) before any encoder is fitted,
so TF-IDF never sees a test text (``app.services.encode.fit_texts``, the workspace's rule too).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.services.data import TRAINING_SPLITS
from app.services.encode import fit_texts
from learner.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, encode_images, encode_texts, get_encoder
from learner.encoders.tfidf import TfidfEncoder
from storage.errors import InputError
from storage.importers import parse_source

CARVED_TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class SimulationData:
    """image (N, Di) and text (N, Dt) features, labels (N, C) 0/1, split (N,) names, and groups (N,):
    the image reference of each pair, so a carved test split never shares an image with the pool."""

    name: str
    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    groups: np.ndarray
    encoders: dict[str, str]
    test_carved: bool = False


def load_simulation_data(source: Path, fmt: str, *, cache_dir: Path, carve_seed: int,
                         image_encoder: str | None = None, text_encoder: str | None = None) -> SimulationData:
    """Parse a labelled dataset; use its precomputed features, or encode its images and texts once
    (cached by content hash in ``cache_dir``). TF-IDF is fitted on the pool's texts only."""
    parsed = parse_source(source, fmt, allow_absolute=True)
    if not parsed.rows:
        raise InputError(str(source), None, "rows", "no pairs found")
    unlabelled = next((r for r in parsed.rows if r.labels is None), None)
    if unlabelled is not None:
        raise unlabelled.error(unlabelled.labels_field, "simulate needs a label set for every pair (the oracle)")
    vocabulary = list(dict.fromkeys([*parsed.vocabulary, *(name for r in parsed.rows for name in r.labels)]))
    column = {name: j for j, name in enumerate(vocabulary)}
    labels = np.zeros((len(parsed.rows), len(vocabulary)), dtype=np.float32)
    for i, row in enumerate(parsed.rows):
        labels[i, [column[name] for name in row.labels]] = 1.0
    split = np.array([r.split for r in parsed.rows], dtype=object)
    groups = np.array([r.image_ref for r in parsed.rows], dtype=object)
    carved = not np.any(split == "test")
    if carved:  # carved here, before any encoder is fitted, so TF-IDF never sees a test text
        pool, test = split_pool_and_test(split, groups, carve_seed)
        split = split.copy()
        split[test] = "test"
    if "image" in parsed.features and "text" in parsed.features and not (image_encoder or text_encoder):
        image, text = parsed.features["image"], parsed.features["text"]
        encoders = {"image": "precomputed", "text": "precomputed"}
    else:
        missing = next((r for r in parsed.rows if r.image is None), None)
        if missing is not None:
            raise missing.error(missing.image_field, "no image file to encode (feature-only pair)")
        image_name, text_name = image_encoder or DEFAULT_IMAGE_ENCODER, text_encoder or DEFAULT_TEXT_ENCODER
        image = encode_images(get_encoder(image_name), [r.image for r in parsed.rows], cache_dir)
        texts = [r.text for r in parsed.rows]
        encoder = get_encoder(text_name)
        if isinstance(encoder, TfidfEncoder):
            encoder.fit(fit_texts(texts, split))
        text = encode_texts(encoder, texts, cache_dir)
        encoders = {"image": image_name, "text": text_name}
    return SimulationData(source.name, np.asarray(image, dtype=np.float32), np.asarray(text, dtype=np.float32),
                          labels, split, groups, encoders, carved)


def count(amount: float, pool_size: int) -> int:
    """A fraction (< 1) of the pool, at least 1, or an absolute count."""
    return max(1, round(amount * pool_size)) if amount < 1 else int(amount)


def carve_by_group(rows: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (kept, carved): ``fraction`` of their distinct groups (at least one), drawn
    with ``seed``, go to the carved side with all their rows, so no image is on both sides."""
    names = np.unique(groups[rows])
    carved = np.random.default_rng(seed).permutation(names)[:max(1, round(fraction * len(names)))]
    in_carved = np.isin(groups[rows], carved)
    return rows[~in_carved], rows[in_carved]


def split_pool_and_test(split: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool = train/pool pairs, test = test pairs. Without a test split, carve one off with ``seed``
    by whole groups (all captions of an image go to the same side)."""
    pool = np.flatnonzero(np.isin(split, TRAINING_SPLITS))
    test = np.flatnonzero(split == "test")
    if len(test):
        return pool, test
    return carve_by_group(pool, groups, CARVED_TEST_FRACTION, seed)
