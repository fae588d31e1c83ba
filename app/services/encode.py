"""``pairlab encode``: every pair's image and text through the configured encoders, cached by content hash.

TF-IDF is fitted on the texts of the training splits only (``pool`` and ``train``), never on the
``val`` or ``test`` texts it is evaluated on; :func:`fit_texts` is the one rule, shared with
``pairlab simulate``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from app.services.data import TRAINING_SPLITS, pair_table
from app.services.progress import StepProgress, quiet
from app.services.ray_engine import RayEngine, ray_embedder, ray_session
from app.services.settings import EncoderChoice, encoder_choice, parse_settings
from learner.encoders import encode_images, encode_texts, get_encoder
from learner.encoders.tfidf import TfidfEncoder
from storage.errors import PairlabError
from storage.pairs import PairColumns
from storage.store import Store
from storage.faults import crash_point
from storage.features import PRECOMPUTED, ids_path, register_features, write_feature_files
from storage.workspace import write_config


def fit_texts(texts: Sequence[str], splits: Sequence[str]) -> list[str]:
    """The texts a fitted text encoder (TF-IDF) learns its vocabulary from: those of the training
    splits, or all of them when no pair is in one (nothing is evaluated then)."""
    return [t for t, s in zip(texts, splits) if s in TRAINING_SPLITS] or list(texts)


def build_encoder(name: str, options: dict[str, Any]):
    """``learner.encoders.get_encoder`` with its option errors as one-line ``[encoders]`` errors."""
    try:
        return get_encoder(name, **options)
    except ValueError as exc:
        raise PairlabError(f"[encoders]: {exc}") from None


def text_encoder_path(store: Store, name: str) -> Path:
    """Where a fitted text encoder (TF-IDF) of the workspace is kept, so later queries share its space."""
    return store.workspace.subdir("features") / f"{name}-text-encoder.joblib"


def remember_encoders(store: Store, *, image: str | None, text: str | None) -> Store:
    """Write encoder names into ``[encoders]`` of ``pairlab.toml`` (validated first); return the store
    with the new configuration."""
    if not (image or text):
        return store
    config = store.workspace.config
    tables = dict(config.learner)
    tables["encoders"] = {**tables.get("encoders", {}), **{k: v for k, v in (("image", image), ("text", text)) if v}}
    config = dataclasses.replace(config, learner=tables)
    changed = dataclasses.replace(store, workspace=dataclasses.replace(store.workspace, config=config))
    parse_settings(changed.workspace)  # validate before writing
    write_config(store.root, config)
    return changed


def _store_features(store: Store, modality: str, encoder: str, matrix: np.ndarray, ids: np.ndarray) -> dict:
    """Write the files outside the transaction, register them inside it, then drop the replaced files."""
    path, row_ids = write_feature_files(store.workspace.subdir("features"), modality, encoder, matrix, ids)
    crash_point("encode.before_register")
    try:
        with store.db.write() as s:
            info, replaced = register_features(s, modality, encoder, path, matrix.shape[1], len(matrix))
    except BaseException:
        path.unlink(missing_ok=True)
        row_ids.unlink(missing_ok=True)
        raise
    if replaced:
        Path(replaced).unlink(missing_ok=True)
        Path(ids_path(replaced)).unlink(missing_ok=True)
    return dataclasses.asdict(info)


def encode_workspace(store: Store, *, image_encoder: str | None = None, text_encoder: str | None = None,
                     progress: StepProgress = quiet, engine: RayEngine | None = None) -> dict[str, Any]:
    """Encode every pair's image and text; names given here are remembered in ``[encoders]``.
    ``engine``: embed the items the cache lacks on Ray actors (``app.services.ray_engine``) instead of in
    this process; everything else (cache, files, registration) is the same. Returns what was written."""
    store = remember_encoders(store, image=image_encoder, text=text_encoder)
    choice = encoder_choice(store)
    table = pair_table(store)
    cache = store.workspace.subdir("cache")
    if choice.image != PRECOMPUTED:
        missing = [p for p in table.image_paths if not Path(p).is_file()]
        if missing:
            raise PairlabError(f"{missing[0]}: image file not found ({len(missing)} pairs); "
                               "feature-only pairs need --image-encoder precomputed")
    with ray_session(engine) if engine is not None else nullcontext() as workers:
        written = _encode(store, choice, table, cache, progress,
                          lambda encoder, modality: ray_embedder(encoder, modality, workers) if workers else None)
    progress(1.0, "encoded")
    return {"image_encoder": choice.image, "text_encoder": choice.text, "pairs": int(len(table.ids)),
            "written": written}


def _encode(store: Store, choice: EncoderChoice, table: PairColumns, cache: Path, progress: StepProgress,
            embedder: Callable[[Any, str], Callable[..., np.ndarray] | None]) -> dict[str, Any]:
    """Both modalities of ``encode_workspace``; ``embedder(encoder, modality)`` gives the ``embed`` of the
    Ray engine, or None for this process."""
    written = {}
    if choice.image != PRECOMPUTED:
        progress(0.0, f"encoding {len(table.ids)} images with {choice.image}")
        encoder = build_encoder(choice.image, choice.image_options)
        matrix = encode_images(encoder, table.image_paths, cache,
                               lambda done, total: progress(0.8 * done / max(total, 1), f"images {done}/{total}"),
                               embed=embedder(encoder, "image"))
        written["image"] = _store_features(store, "image", choice.image, matrix, table.ids)
    if choice.text != PRECOMPUTED:
        progress(0.8, f"encoding {len(table.ids)} texts with {choice.text}")
        encoder = build_encoder(choice.text, choice.text_options)
        if isinstance(encoder, TfidfEncoder):
            encoder.fit(fit_texts(table.texts, table.splits))
            encoder.save(text_encoder_path(store, choice.text))
        matrix = encode_texts(encoder, table.texts, cache,
                              lambda done, total: progress(0.8 + 0.2 * done / max(total, 1), f"texts {done}/{total}"),
                              embed=embedder(encoder, "text"))
        written["text"] = _store_features(store, "text", choice.text, matrix, table.ids)
    return written
