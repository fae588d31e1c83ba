"""Search with the latest model (Explore): images for a free-text query, texts for a pair's image."""
from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from app.services.data import feature_rows, pair_table
from app.services.encode import build_encoder, text_encoder_path
from app.services.models import cached_model, current_model
from app.services.settings import encoder_choice
from learner.encoders.tfidf import TfidfEncoder
from learner.inference import iter_infer
from storage.features import PRECOMPUTED, npz_arrays
from storage.errors import NotFoundError, PairlabError
from storage.pairs import image_digests
from storage.store import Store


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Common-space means of every pair under one model version: pair_ids (N,), mu_image/mu_text (N, d),
    memory-mapped from the file. Compared and hashed by identity: one object per file (``_load_embeddings``)."""

    version: int
    pair_ids: np.ndarray
    mu_image: np.ndarray
    mu_text: np.ndarray


@dataclass(frozen=True)
class Hit:
    pair_id: int
    score: float


@lru_cache(maxsize=2)
def _cached_tfidf(path: str, _mtime: float) -> TfidfEncoder:
    return TfidfEncoder.load(path)


def _embeddings_path(store: Store, version: int) -> Path:
    return store.workspace.subdir("models") / f"embeddings-v{version}.npz"


def model_embeddings(store: Store) -> Embeddings:
    """The latest model's embeddings of all pairs: computed once per version (batch by batch from the
    memory-mapped features) and kept beside the checkpoint, then memory-mapped once per process and version
    (reading the 2 GiB file of 1M pairs into memory took 13-14 s of Explore's first render)."""
    info = current_model(store)
    path = _embeddings_path(store, info.version)
    if not path.is_file():
        table = pair_table(store)
        image, text = feature_rows(store, table.ids, encoder_choice(store))
        d = cached_model(info.path).hparams["dim"]
        mu_image, mu_text = np.empty((len(table.ids), d), np.float32), np.empty((len(table.ids), d), np.float32)
        start = 0
        for batch in iter_infer(cached_model(info.path), image, text, mc_samples=0):
            mu_image[start:start + batch.n], mu_text[start:start + batch.n] = batch.mu_image, batch.mu_text
            start += batch.n
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, pair_ids=table.ids, mu_image=mu_image, mu_text=mu_text)
        os.replace(tmp, path)
    return _load_embeddings(str(path), path.stat().st_mtime, info.version)


@lru_cache(maxsize=2)
def _load_embeddings(path: str, _mtime: float, version: int) -> Embeddings:
    data = npz_arrays(Path(path))
    return Embeddings(version, data["pair_ids"], data["mu_image"], data["mu_text"])


@lru_cache(maxsize=2)
def _cached_encoder(name: str, options: str):
    return build_encoder(name, json.loads(options))


def embed_query_text(store: Store, query: str) -> np.ndarray:
    """The latest model's text mean (d,) of a free-text query, through the workspace's text encoder
    (loaded or built once per process)."""
    query = query.strip()
    if not query:
        raise PairlabError("query: empty text")
    info = current_model(store)
    choice = encoder_choice(store)
    if choice.text == PRECOMPUTED:
        raise PairlabError("free-text search needs a text encoder; this workspace's text features were precomputed")
    path = text_encoder_path(store, choice.text)
    encoder = _cached_tfidf(str(path), path.stat().st_mtime) if path.is_file() \
        else _cached_encoder(choice.text, json.dumps(choice.text_options, sort_keys=True))
    features = encoder.embed_texts([query])  # (1, Dt)
    with torch.no_grad():
        mu, _ = cached_model(info.path).encode_text(torch.from_numpy(np.asarray(features, dtype=np.float32)))
    return mu.numpy()[0]


SCORE_CHUNK_ROWS = 65_536  # rows per product in ``similarities``: 64 MiB of a (N, 256) float32 matrix


def similarities(matrix: np.ndarray, vector: np.ndarray, *, chunk: int = SCORE_CHUNK_ROWS) -> np.ndarray:
    """``matrix @ vector`` (N,) float32 for an (N, d) float32 matrix and a (d,) vector, ``chunk`` rows at a
    time: one pass, memory bounded by a chunk besides the (N,) scores.

    A C-ordered ``np.memmap`` as ``npz_arrays`` returns it is read chunk by chunk into one reused buffer
    rather than through its mapping: mapping 1 GiB of pages into the process made the first pass over
    1M pairs 0.8-1.2 s, where reading costs 0.3-0.4 s each pass. On one BLAS thread: the product is
    bound by memory, and a second thread on the shared 2 cores made the pass slower (0.75 s against 0.38 s).
    """
    scores = np.empty(len(matrix), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        for start, block in _row_blocks(matrix, chunk):
            np.matmul(block, vector, out=scores[start:start + len(block)])
    return scores


def _row_blocks(matrix: np.ndarray, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of ``matrix``, ``chunk`` rows at a time; a mapped file's rows read into one buffer.

    Only a whole mapping is read from its file: a view of one (a row slice) keeps the mapping's
    ``offset``, so reading from there would return the wrong rows."""
    whole = isinstance(matrix, np.memmap) and isinstance(matrix.base, mmap.mmap)
    mapped = whole and matrix.flags.c_contiguous and matrix.dtype == np.float32
    if not mapped:
        for start in range(0, len(matrix), chunk):
            yield start, matrix[start:start + chunk]
        return
    buffer = np.empty((min(chunk, len(matrix)),) + matrix.shape[1:], dtype=np.float32)
    with open(matrix.filename, "rb", buffering=0) as fh:
        fh.seek(matrix.offset)
        for start in range(0, len(matrix), chunk):
            block = buffer[:min(chunk, len(matrix) - start)]
            if fh.readinto(memoryview(block).cast("B")) != block.nbytes:
                raise PairlabError(f"{matrix.filename}: shorter than its header says; delete it to recompute")
            yield start, block


def _top(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` highest scores, highest first (ties by position): O(N + count log count)."""
    if count >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, count - 1)[:count]
    return part[np.lexsort((part, -scores[part]))]


def images_for_text(store: Store, query: str, *, k: int = 12) -> list[Hit]:
    """Top-k pairs whose image is most similar to the query text, one hit per distinct image."""
    emb = model_embeddings(store)
    scores = similarities(emb.mu_image, embed_query_text(store, query))  # (N,)
    hits: list[Hit] = []
    count = 8 * k
    while True:  # the best candidates, widened until k distinct images are among them
        candidates = _top(scores, count)
        with store.db.read() as s:
            digest = image_digests(s, emb.pair_ids[candidates].tolist())
        hits, seen = [], set()
        for i in candidates:
            key = digest.get(int(emb.pair_ids[i]))
            if key in seen:
                continue
            seen.add(key)
            hits.append(Hit(int(emb.pair_ids[i]), float(scores[i])))
            if len(hits) == k:
                return hits
        if count >= len(scores):
            return hits
        count *= 8


def texts_for_pair(store: Store, pair_id: int, *, k: int = 10) -> list[Hit]:
    """Top-k texts of the workspace for the image of ``pair_id``; kept per model version and pair, so a
    page rerun showing the same pair does not multiply the (N, d) text means again (0.3-0.5 s at 1M)."""
    emb = model_embeddings(store)
    return list(_texts_for_image(emb, pair_id, k))


@lru_cache(maxsize=64)
def _texts_for_image(emb: Embeddings, pair_id: int, k: int) -> tuple[Hit, ...]:
    row = np.flatnonzero(emb.pair_ids == pair_id)
    if len(row) == 0:
        raise NotFoundError(f"pair {pair_id} has no embedding under model v{emb.version}")
    scores = similarities(emb.mu_text, np.asarray(emb.mu_image[row[0]]))  # (N,)
    return tuple(Hit(int(emb.pair_ids[i]), float(scores[i])) for i in _top(scores, k))
