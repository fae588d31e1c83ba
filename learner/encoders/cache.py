"""Content-hash feature cache: encode each distinct image or text once per encoder config.

Layout under ``cache_dir``::

    <encoder name>-<fingerprint>/          one namespace per (name, version, config, weights/corpus)
        meta.json                          the encoder name, fingerprint, config and D (informational)
        <stamp>-<rand>.features.npy        (M, D) float32 rows of one run
        <stamp>-<rand>.keys.npy            (M,) S64: hex sha256 of each row's image bytes / UTF-8 text

Each run that encodes something writes one shard: the features file first, then the
keys file, each through a temp file + ``os.replace``. A shard counts only once its keys
file exists, so a crash or a concurrent reader never sees a partial shard. Rows are found
by a sorted search over all shards' keys and gathered from memory-mapped feature files.
Two processes encoding the same new items at once may both write them; duplicates are harmless.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from learner.encoders.base import IMAGE, TEXT, Encoder, ImageDecodeError, ProgressFn, UnsupportedModalityError, \
    atomic_write, sha256_file

logger = logging.getLogger(__name__)

KEY_DTYPE = "S64"
_FEATURES_SUFFIX = ".features.npy"
_KEYS_SUFFIX = ".keys.npy"


class FeatureCache:
    """The shards of one encoder namespace: ``lookup`` rows by content key, ``add`` a new shard."""

    def __init__(self, cache_dir: str | Path, encoder: Encoder) -> None:
        self.encoder = encoder
        self.dir = Path(cache_dir) / f"{encoder.name}-{encoder.fingerprint()}"

    def shard_ids(self) -> list[str]:
        """Committed shards (those whose keys file exists), oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p.name[: -len(_KEYS_SUFFIX)] for p in self.dir.glob(f"*{_KEYS_SUFFIX}"))

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Find cached rows for ``(K,)`` S64 keys.

        Returns ``found`` ``(K,)`` bool and ``rows`` ``(found.sum(), D)`` float32, in key order.
        """
        dim = self.encoder.dim
        found = np.zeros(len(keys), dtype=bool)
        shards = self._load_shard_keys()
        if not shards or len(keys) == 0:
            return found, np.empty((0, dim), dtype=np.float32)
        all_keys = np.concatenate([k for _, k in shards])                                   # (M,)
        shard_of = np.concatenate([np.full(len(k), i, dtype=np.int64) for i, (_, k) in enumerate(shards)])
        row_of = np.concatenate([np.arange(len(k), dtype=np.int64) for _, k in shards])
        order = np.argsort(all_keys, kind="stable")
        sorted_keys = all_keys[order]
        pos = np.minimum(np.searchsorted(sorted_keys, keys), len(order) - 1)                 # (K,)
        found = sorted_keys[pos] == keys
        hit_src = order[pos[found]]                                                          # (H,) into all_keys
        rows = np.empty((int(found.sum()), dim), dtype=np.float32)
        for shard_index in np.unique(shard_of[hit_src]):
            sel = np.flatnonzero(shard_of[hit_src] == shard_index)
            feats = np.load(self.dir / f"{shards[shard_index][0]}{_FEATURES_SUFFIX}", mmap_mode="r")
            rows[sel] = feats[row_of[hit_src[sel]]]
        return found, rows

    def _load_shard_keys(self) -> list[tuple[str, np.ndarray]]:
        """``(shard id, (M_s,) keys)`` of every readable shard whose features match its keys and D."""
        shards = []
        for shard in self.shard_ids():
            keys = np.load(self.dir / f"{shard}{_KEYS_SUFFIX}")
            try:
                feats = np.load(self.dir / f"{shard}{_FEATURES_SUFFIX}", mmap_mode="r")
            except (OSError, ValueError) as exc:
                logger.warning("feature cache %s: skipping shard %s (%s)", self.dir, shard, exc)
                continue
            if feats.shape != (len(keys), self.encoder.dim) or feats.dtype != np.float32:
                logger.warning("feature cache %s: skipping shard %s with shape %s", self.dir, shard, feats.shape)
                continue
            shards.append((shard, keys.astype(KEY_DTYPE, copy=False)))
        return shards

    def add(self, keys: np.ndarray, features: np.ndarray) -> str:
        """Store ``(M,)`` S64 keys with their ``(M, D)`` float32 rows as a new shard; returns its id."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            config = self.encoder.config
            info = {
                "encoder": self.encoder.name,
                "fingerprint": self.encoder.fingerprint(),
                "version": self.encoder.version,
                "config": asdict(config) if is_dataclass(config) else repr(config),
                "dim": self.encoder.dim,
            }
            with atomic_write(meta) as fh:
                fh.write(json.dumps(info, indent=2, default=str).encode("utf-8"))
        shard = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        with atomic_write(self.dir / f"{shard}{_FEATURES_SUFFIX}") as fh:
            np.save(fh, np.ascontiguousarray(features, dtype=np.float32))
        with atomic_write(self.dir / f"{shard}{_KEYS_SUFFIX}") as fh:   # written last: commits the shard
            np.save(fh, np.asarray(keys, dtype=KEY_DTYPE))
        return shard


def _hash_image(path: str | Path) -> bytes:
    try:
        return sha256_file(path).encode("ascii")
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read image file ({exc})") from exc


def hash_images(paths: Sequence[str | Path], workers: int = 2) -> np.ndarray:
    """``(N,)`` paths -> ``(N,)`` S64 hex sha256 of each file's bytes (hashed on ``workers`` threads)."""
    if workers <= 1 or len(paths) < 64:
        digests = [_hash_image(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pairlab-hash") as pool:
            digests = list(pool.map(_hash_image, paths, chunksize=64))
    return np.array(digests, dtype=KEY_DTYPE)


def hash_texts(texts: Sequence[str]) -> np.ndarray:
    """``(N,)`` texts -> ``(N,)`` S64 hex sha256 of each text's UTF-8 bytes."""
    return np.array([hashlib.sha256(t.encode("utf-8")).hexdigest().encode("ascii") for t in texts], dtype=KEY_DTYPE)


def _check_can_embed(encoder: Encoder, modality: str) -> None:
    if not encoder.computes:
        raise UnsupportedModalityError(
            f"encoder {encoder.name!r} reads stored features and computes none: use its features() method"
        )
    if modality not in encoder.modalities:
        raise UnsupportedModalityError(f"encoder {encoder.name!r} does not embed {modality}s")


def _encode_cached(
    encoder: Encoder,
    keys: np.ndarray,
    items: Sequence,
    embed: Callable[..., np.ndarray],
    cache_dir: str | Path | None,
    progress: ProgressFn | None,
) -> np.ndarray:
    """Shared body of :func:`encode_images` / :func:`encode_texts`: dedupe, look up, embed misses, store."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)   # (U,), (U,), (N,)
    out = np.empty((len(uniq), encoder.dim), dtype=np.float32)                      # (U, D)
    cached = np.zeros(len(uniq), dtype=bool)
    cache = FeatureCache(cache_dir, encoder) if cache_dir is not None else None
    if cache is not None:
        cached, rows = cache.lookup(uniq)
        out[cached] = rows
    missing = np.flatnonzero(~cached)                                                # (U_miss,)
    logger.info(
        "%s: %d items, %d distinct, %d cached, %d to encode",
        encoder.name, len(keys), len(uniq), int(cached.sum()), len(missing),
    )
    if len(missing):
        feats = embed([items[first[i]] for i in missing], progress=progress)        # (U_miss, D)
        out[missing] = feats
        if cache is not None:
            shard = cache.add(uniq[missing], feats)
            logger.info("%s: wrote %d rows to cache shard %s/%s", encoder.name, len(missing), cache.dir, shard)
    elif progress is not None:
        progress(0, 0)
    return out[inverse.reshape(-1)]


def encode_images(
    encoder: Encoder,
    image_paths: Sequence[str | Path],
    cache_dir: str | Path | None,
    progress: ProgressFn | None = None,
    *,
    embed: Callable[..., np.ndarray] | None = None,
) -> np.ndarray:
    """Features of image files, cached by the sha256 of each file's bytes.

    ``(N,)`` paths -> ``(N, D)`` float32. Identical files (e.g. one image shared by
    several captions) are encoded once and get identical rows. Only files whose
    content is not yet cached for this encoder config are decoded and run through
    the model. ``cache_dir=None`` disables the cache (deduplication still applies).
    ``progress(done, total)`` counts the distinct items being encoded; it is called
    once with ``(0, 0)`` when everything was cached. ``embed(items, progress=...)`` computes the rows
    that are not cached, ``(M,)`` paths -> ``(M, D)``: ``encoder.embed_images`` by default; the Ray
    engine (``app.services.ray_engine``) passes one that runs that same method on its actors.
    """
    _check_can_embed(encoder, IMAGE)
    paths = [os.fspath(p) for p in image_paths]
    return _encode_cached(encoder, hash_images(paths), paths, embed or encoder.embed_images, cache_dir, progress)


def encode_texts(
    encoder: Encoder,
    texts: Sequence[str],
    cache_dir: str | Path | None,
    progress: ProgressFn | None = None,
    *,
    embed: Callable[..., np.ndarray] | None = None,
) -> np.ndarray:
    """Features of texts, cached by the sha256 of each text's UTF-8 bytes.

    ``(N,)`` texts -> ``(N, D)`` float32; same caching, deduplication, progress and ``embed``
    contract as :func:`encode_images` (``embed`` defaults to ``encoder.embed_texts``). For ``tfidf`` the cache namespace includes the
    fitted corpus, so refitting starts a new namespace.
    """
    _check_can_embed(encoder, TEXT)
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(text).__name__}")
    return _encode_cached(encoder, hash_texts(texts), texts, embed or encoder.embed_texts, cache_dir, progress)
