"""TF-IDF + truncated SVD text encoder (latent semantic analysis), fitted on a workspace's texts.

References: Salton & Buckley, "Term-weighting approaches in automatic text retrieval",
IP&M 1988 (sublinear TF-IDF); Deerwester et al., "Indexing by latent semantic analysis",
JASIS 1990 (SVD of the term-document matrix).

Character n-grams inside word boundaries (as sklearn's ``char_wb``) work for any script, Chinese
included, where there are no spaces between words. When the corpus is mostly
space-separated, word n-grams are stacked next to them. The sparse matrix is
reduced with TruncatedSVD (fitted on at most ``svd_max_docs`` texts) to
``min(max_dim, n_docs - 1, n_features - 1)`` dims and
each row is L2-normalised, so a dot product is a cosine similarity.

The fitted encoder is saved with :meth:`TfidfEncoder.save` (joblib, atomic) and
reloaded with :meth:`TfidfEncoder.load` so later texts (an Explore query) land in
the same space.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from learner.encoders.base import RUNTIME_ONLY, TEXT, Encoder, NotFittedError, ProgressFn, atomic_write

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TfidfConfig:
    """Settings of :class:`TfidfEncoder`.

    max_dim:            upper bound on the SVD dimension, 512.
    char_ngram_range:   character n-gram lengths (``char_wb``), (1, 3): single CJK characters carry meaning.
    word_ngram_range:   word n-gram lengths, (1, 2), used only when the corpus is space-separated.
    spaced_fraction:    the corpus counts as space-separated when at least this fraction of its texts
                        has two or more whitespace-separated tokens, 0.5.
    max_features:       vocabulary cap per analyser (most frequent kept), 200_000.
    sublinear_tf:       use 1 + log(tf), True.
    svd_iterations:     randomized SVD power iterations, 5.
    svd_max_docs:       the SVD is fitted on a seeded random sample of at most this many texts, 20_000
                        (TF-IDF statistics always use the whole corpus); bounds the fit time on big workspaces.
    seed:               SVD random state, 0.
    batch_size:         texts transformed per step (progress granularity), 4096.
    """

    max_dim: int = 512
    char_ngram_range: tuple[int, int] = (1, 3)
    word_ngram_range: tuple[int, int] = (1, 2)
    spaced_fraction: float = 0.5
    max_features: int = 200_000
    sublinear_tf: bool = True
    svd_iterations: int = 5
    svd_max_docs: int = 20_000
    seed: int = 0
    batch_size: int = field(default=4096, metadata=RUNTIME_ONLY)

    def __post_init__(self) -> None:
        if self.max_dim < 1:
            raise ValueError(f"max_dim: must be >= 1, got {self.max_dim}")
        for name in ("char_ngram_range", "word_ngram_range"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name}: need 1 <= min <= max, got {(lo, hi)}")
        if not 0.0 <= self.spaced_fraction <= 1.0:
            raise ValueError(f"spaced_fraction: must be in [0, 1], got {self.spaced_fraction}")
        if self.max_features < 2 or self.batch_size < 1 or self.svd_iterations < 0 or self.svd_max_docs < 2:
            raise ValueError("max_features >= 2, batch_size >= 1, svd_iterations >= 0 and svd_max_docs >= 2 are required")


@dataclass
class _Fitted:
    """The fitted state: vectorizers, SVD and the corpus id (sha256 of the fit texts, in order)."""

    char: TfidfVectorizer
    word: TfidfVectorizer | None
    svd: TruncatedSVD
    corpus_sha256: str


def is_space_separated(texts: list[str], spaced_fraction: float) -> bool:
    """True when at least ``spaced_fraction`` of the texts have >= 2 whitespace-separated tokens."""
    spaced = sum(1 for t in texts if len(t.split()) >= 2)
    return spaced >= spaced_fraction * len(texts)


def char_wb_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """Character n-grams inside word boundaries (each word padded with one space), lower-cased.

    sklearn's ``analyzer="char_wb"`` minus the whitespace-only unigram ``" "``, which every
    text shares and which would give texts with no known n-gram a non-zero vector.
    """
    lo, hi = ngram_range
    grams: list[str] = []
    for word in text.lower().split():
        padded = f" {word} "
        for n in range(lo, hi + 1):
            grams.extend(padded[i:i + n] for i in range(len(padded) - n + 1))
    return [g for g in grams if not g.isspace()]


def _corpus_sha256(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of ``(N, D)``; all-zero rows (no known n-gram) stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class TfidfEncoder(Encoder):
    """Text encoder: ``(N,)`` texts -> ``(N, D)`` float32 unit rows, ``D <= 512``; call ``fit`` first."""

    name = "tfidf"
    modalities = frozenset({TEXT})

    def __init__(self, config: TfidfConfig | None = None) -> None:
        self._config = config or TfidfConfig()
        self._fitted: _Fitted | None = None

    @property
    def config(self) -> TfidfConfig:
        return self._config

    @property
    def is_fitted(self) -> bool:
        return self._fitted is not None

    @property
    def dim(self) -> int:
        return self._require_fitted().svd.n_components

    def _require_fitted(self) -> _Fitted:
        if self._fitted is None:
            raise NotFittedError("tfidf encoder is not fitted: call fit(texts) or TfidfEncoder.load(path) first")
        return self._fitted

    def fingerprint_payload(self) -> dict[str, Any]:
        fitted = self._require_fitted()
        return {"corpus_sha256": fitted.corpus_sha256, "sklearn": sklearn.__version__}

    def fit(self, texts: Sequence[str]) -> "TfidfEncoder":
        """Fit TF-IDF and SVD on a corpus of ``n_docs`` texts (the workspace's captions); returns ``self``.

        The SVD dimension is ``min(max_dim, n_docs - 1, n_features - 1)`` with
        ``n_docs = min(len(texts), svd_max_docs)``; a corpus that
        leaves it below 1 (fewer than 2 texts, or a single distinct n-gram) raises ValueError.
        """
        cfg = self._config
        texts = list(texts)
        if len(texts) < 2:
            raise ValueError(f"texts: tfidf needs at least 2 texts to fit, got {len(texts)}")
        char = TfidfVectorizer(
            analyzer=partial(char_wb_ngrams, ngram_range=cfg.char_ngram_range), sublinear_tf=cfg.sublinear_tf,
            max_features=cfg.max_features, dtype=np.float32,
        )
        blocks = [char.fit_transform(texts)]                       # (n_docs, n_char) sparse
        word = None
        if is_space_separated(texts, cfg.spaced_fraction):
            word = TfidfVectorizer(
                analyzer="word", ngram_range=cfg.word_ngram_range, sublinear_tf=cfg.sublinear_tf,
                max_features=cfg.max_features, token_pattern=r"(?u)\b\w+\b", dtype=np.float32,
            )
            blocks.append(word.fit_transform(texts))               # (n_docs, n_word) sparse
        matrix = sp.hstack(blocks, format="csr")                   # (n_docs, n_features)
        if matrix.shape[0] > cfg.svd_max_docs:
            rows = np.random.default_rng(cfg.seed).choice(matrix.shape[0], cfg.svd_max_docs, replace=False)
            matrix = matrix[np.sort(rows)]                         # (svd_max_docs, n_features)
        n_components = min(cfg.max_dim, matrix.shape[0] - 1, matrix.shape[1] - 1)
        if n_components < 1:
            raise ValueError(f"texts: corpus too small for SVD ({matrix.shape[0]} texts, {matrix.shape[1]} n-grams)")
        svd = TruncatedSVD(n_components=n_components, n_iter=cfg.svd_iterations, random_state=cfg.seed)
        svd.fit(matrix)
        self._fitted = _Fitted(char=char, word=word, svd=svd, corpus_sha256=_corpus_sha256(texts))
        logger.info(
            "tfidf fitted on %d texts: %d n-gram features (word n-grams: %s) -> %d dims, explained variance %.3f",
            len(texts), matrix.shape[1], word is not None, n_components, float(svd.explained_variance_ratio_.sum()),
        )
        return self

    def embed_texts(self, texts: Sequence[str], *, progress: ProgressFn | None = None) -> np.ndarray:
        """``(N,)`` texts -> ``(N, D)`` float32, L2-normalised (rows with no known n-gram are zero)."""
        fitted = self._require_fitted()
        texts = list(texts)
        out = np.empty((len(texts), fitted.svd.n_components), dtype=np.float32)
        step = self._config.batch_size
        for start in range(0, len(texts), step):
            chunk = texts[start:start + step]
            blocks = [fitted.char.transform(chunk)]
            if fitted.word is not None:
                blocks.append(fitted.word.transform(chunk))
            reduced = fitted.svd.transform(sp.hstack(blocks, format="csr"))   # (B, D)
            out[start:start + len(chunk)] = _l2_normalize(reduced)
            if progress is not None:
                progress(start + len(chunk), len(texts))
        return out

    def save(self, path: str | Path) -> None:
        """Write the fitted encoder to ``path`` with joblib, atomically (temp file + ``os.replace``)."""
        fitted = self._require_fitted()
        with atomic_write(path) as fh:
            joblib.dump({"config": self._config, "fitted": fitted}, fh)

    @classmethod
    def load(cls, path: str | Path) -> "TfidfEncoder":
        """Read an encoder written by :meth:`save`. joblib unpickles: load only files you wrote."""
        state = joblib.load(path)
        if not isinstance(state, dict) or not isinstance(state.get("config"), TfidfConfig) \
                or not isinstance(state.get("fitted"), _Fitted):
            raise ValueError(f"{path}: not a saved tfidf encoder")
        encoder = cls(state["config"])
        encoder._fitted = state["fitted"]
        return encoder
