"""OpenCLIP image and text encoder from a local weights file (optional extra ``pairlab[clip]``).

Reference: Radford et al., "Learning transferable visual models from natural language
supervision" (CLIP), ICML 2021; Cherti et al., "Reproducible scaling laws for contrastive
language-image learning" (OpenCLIP), CVPR 2023.

Registered as ``open_clip:<arch>`` (e.g. ``open_clip:ViT-B-32``) with ``weights_path``
pointing to a local checkpoint: pairlab never downloads weights. The package is imported
lazily; ``open_clip_torch`` depends on torchvision, which is not installable in the
CPU-only environment this project is developed in, so this encoder's model path is
untested here (only argument parsing and the missing-extra error are).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learner.encoders.base import IMAGE, RUNTIME_ONLY, TEXT, Encoder, MissingExtraError, ProgressFn, sha256_file
from learner.encoders.images import iter_image_batches, open_image

logger = logging.getLogger(__name__)

PREFIX = "open_clip:"
_EXTRA_HINT = "install the extra: pip install 'pairlab[clip]'"


@dataclass(frozen=True)
class OpenClipConfig:
    """Settings of :class:`OpenClipEncoder`.

    arch:           the open_clip model name, e.g. ``ViT-B-32`` (required; from ``open_clip:<arch>``).
    weights_path:   a local checkpoint file for that architecture (required; never downloaded).
    batch_size:     items per forward pass, 32.
    decode_workers: image decoder threads, 2; 0 decodes in the calling thread.
    """

    arch: str
    weights_path: str
    batch_size: int = field(default=32, metadata=RUNTIME_ONLY)
    decode_workers: int = field(default=2, metadata=RUNTIME_ONLY)

    def __post_init__(self) -> None:
        if not self.arch or self.arch != self.arch.strip():
            raise ValueError(f"arch: name an open_clip architecture as 'open_clip:<arch>', got {self.arch!r}")
        if not self.weights_path:
            raise ValueError("weights_path: open_clip needs a local weights file (weights_path=...)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers: must be >= 0, got {self.decode_workers}")


def parse_arch(name: str) -> str:
    """``'open_clip:ViT-B-32'`` -> ``'ViT-B-32'``; ValueError when the architecture is missing."""
    if not name.startswith(PREFIX) or not name[len(PREFIX):].strip():
        raise ValueError(f"encoder name {name!r}: expected 'open_clip:<arch>', e.g. 'open_clip:ViT-B-32'")
    return name[len(PREFIX):].strip()


def _load_and_preprocess(path: str | Path, preprocess) -> torch.Tensor:
    """Decode one image upright (``images.open_image``), then open_clip's own preprocessing: ``(3, S, S)`` float32."""
    return preprocess(open_image(path))


class OpenClipEncoder(Encoder):
    """Image and text encoder: ``(N,)`` paths or texts -> ``(N, D)`` float32 unit rows in CLIP's joint space."""

    name = "open_clip"
    version = 2  # 2: images are decoded upright (EXIF orientation); features cached by version 1 are stale
    modalities = frozenset({IMAGE, TEXT})

    def __init__(self, config: OpenClipConfig) -> None:
        self._config = config
        if not Path(config.weights_path).is_file():
            raise FileNotFoundError(f"weights_path: {config.weights_path} does not exist")
        if importlib.util.find_spec("open_clip") is None:
            raise MissingExtraError(f"the 'open_clip:{config.arch}' encoder needs open_clip_torch: {_EXTRA_HINT}")
        self._loaded: tuple[Any, Any, Any] | None = None
        self._weights_sha: str | None = None

    @property
    def config(self) -> OpenClipConfig:
        return self._config

    @property
    def dim(self) -> int:
        import open_clip

        model_cfg = open_clip.get_model_config(self._config.arch)
        if model_cfg is None:
            raise ValueError(f"arch: open_clip does not know {self._config.arch!r}")
        return int(model_cfg["embed_dim"])

    def fingerprint_payload(self) -> dict[str, Any]:
        if self._weights_sha is None:
            self._weights_sha = sha256_file(self._config.weights_path)
        return {"weights_sha256": self._weights_sha}

    def _get(self) -> tuple[Any, Any, Any]:
        """``(model, preprocess, tokenizer)``, built once from the local weights."""
        if self._loaded is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import open_clip

            model, _, preprocess = open_clip.create_model_and_transforms(
                self._config.arch, pretrained=self._config.weights_path, device="cpu",
            )
            model.eval()
            tokenizer = open_clip.get_tokenizer(self._config.arch)
            self._loaded = (model, preprocess, tokenizer)
            logger.info("loaded open_clip %s from %s", self._config.arch, self._config.weights_path)
        return self._loaded

    def embed_images(self, paths: Sequence[str | Path], *, progress: ProgressFn | None = None) -> np.ndarray:
        """``(N,)`` paths -> ``(N, D)`` float32, L2-normalised image embeddings."""
        model, preprocess, _ = self._get()
        cfg = self._config
        chunks: list[np.ndarray] = []
        done = 0
        load = partial(_load_and_preprocess, preprocess=preprocess)
        with torch.inference_mode():
            for batch in iter_image_batches(paths, load, batch_size=cfg.batch_size, workers=cfg.decode_workers):
                feats = model.encode_image(torch.stack(batch), normalize=True)   # (B, D)
                chunks.append(feats.float().numpy())
                done += len(batch)
                if progress is not None:
                    progress(done, len(paths))
        return np.concatenate(chunks) if chunks else np.empty((0, self.dim), dtype=np.float32)

    def embed_texts(self, texts: Sequence[str], *, progress: ProgressFn | None = None) -> np.ndarray:
        """``(N,)`` texts -> ``(N, D)`` float32, L2-normalised text embeddings."""
        model, _, tokenizer = self._get()
        texts = list(texts)
        step = self._config.batch_size
        chunks: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), step):
                tokens = tokenizer(texts[start:start + step])                    # (B, context_length)
                chunks.append(model.encode_text(tokens, normalize=True).float().numpy())
                if progress is not None:
                    progress(min(start + step, len(texts)), len(texts))
        return np.concatenate(chunks) if chunks else np.empty((0, self.dim), dtype=np.float32)
