"""The encoder contract shared by every frozen feature extractor (DESIGN §3).

An encoder is a small object that holds one frozen config dataclass and turns
image files or texts into float32 feature matrices. Encoders know nothing about
caching: :mod:`learner.encoders.cache` wraps them with a content-hash cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

#: ``progress(done, total)``: called after each batch with the number of items
#: finished so far and the number of items in the call.
ProgressFn = Callable[[int, int], None]

IMAGE = "image"
TEXT = "text"

#: Marks a config field that changes speed, not features: it is left out of the
#: cache fingerprint (``dataclasses.field(metadata=RUNTIME_ONLY)``).
RUNTIME_ONLY = {"affects_features": False}


class EncoderError(Exception):
    """Base class of the encoder errors."""


class MissingExtraError(EncoderError, ImportError):
    """An optional dependency of an encoder is not installed; the message names the pip extra."""


class NotFittedError(EncoderError, RuntimeError):
    """A corpus-fitted encoder (``tfidf``) was used before ``fit`` or ``load``."""


class UnsupportedModalityError(EncoderError, ValueError):
    """The encoder cannot embed this modality (e.g. images with ``tfidf``)."""


class ImageDecodeError(EncoderError, ValueError):
    """An image file could not be read or decoded; the message names the file."""


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[bytes]]:
    """Open a temp file next to ``path`` for binary writing; on success ``os.replace`` it onto ``path``.

    Readers see either the old file or the complete new one, never a partial write.
    On error the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def feature_config(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass that change the features (runtime-only fields dropped)."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.metadata.get("affects_features", True)
    }


class Encoder(ABC):
    """A frozen feature extractor.

    Subclasses set ``name`` (the registry name) and ``modalities`` and implement
    ``dim``, ``fingerprint_payload`` and the ``embed_*`` method(s) they support.
    """

    name: ClassVar[str]
    modalities: ClassVar[frozenset[str]]
    #: Bumped when an encoder's preprocessing or pooling changes, so old cache rows are not reused.
    version: ClassVar[int] = 1
    #: False for encoders that only read stored features (``precomputed``): nothing to embed or cache.
    computes: ClassVar[bool] = True

    @property
    @abstractmethod
    def dim(self) -> int:
        """D, the feature dimension."""

    @property
    @abstractmethod
    def config(self) -> Any:
        """The encoder's frozen config dataclass."""

    def fingerprint_payload(self) -> dict[str, Any]:
        """Everything besides name, version and config that decides the features (e.g. weight hashes)."""
        return {}

    def fingerprint(self) -> str:
        """A 16-hex-digit id of (name, version, feature-relevant config, weights): the cache namespace."""
        payload = {
            "name": self.name,
            "version": self.version,
            "config": feature_config(self.config),
            "extra": self.fingerprint_payload(),
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def embed_images(self, paths: Sequence[str | Path], *, progress: ProgressFn | None = None) -> np.ndarray:
        """Features of image files, uncached: ``(N,)`` paths -> ``(N, D)`` float32."""
        raise UnsupportedModalityError(f"encoder {self.name!r} does not embed images")

    def embed_texts(self, texts: Sequence[str], *, progress: ProgressFn | None = None) -> np.ndarray:
        """Features of texts, uncached: ``(N,)`` strings -> ``(N, D)`` float32."""
        raise UnsupportedModalityError(f"encoder {self.name!r} does not embed texts")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
