"""Batched inference: the arrays selection consumes (``learner.outputs.InferenceOutputs``).

mc_probs_*: K samples z ~ N(mu, sigma^2) per modality through the shared classifier (PCME
sampling; ASCMR intra-modality uncertainty). dropout_probs: K' stochastic forward passes
with only the dropout layers active, each the mean of the two branches' probabilities (MC
dropout, Gal & Ghahramani ICML 2016; BALD, Houlsby et al. 2011). Seeded, so repeated calls agree,
and the global torch RNG is left untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from learner.metrics import evaluate_retrieval
from learner.model import CrossModalModel
from learner.outputs import InferenceOutputs


@dataclass(frozen=True)
class InferenceConfig:
    """How many samples ``infer`` draws for selection, and its batch size.

    mc_samples:      Gaussian samples z ~ N(mu, sigma^2) per modality (K >= 0, 8): the MC
                     entropies and mutual information of the embeddings (ASCMR §3, PCME §3.2).
    dropout_samples: MC-dropout passes (K' >= 0, 10), used only by BALD (Houlsby et al. 2011);
                     callers pass 0 for the other strategies, which is ``infer``'s default.
    batch_size:      rows per forward pass (>= 1, 1024).
    """

    mc_samples: int = 8
    dropout_samples: int = 10
    batch_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("mc_samples", "dropout_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"InferenceConfig.{name}: expected >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"InferenceConfig.batch_size: expected >= 1, got {self.batch_size}")


_DEFAULTS = InferenceConfig()


def _set_dropout(model: nn.Module, active: bool) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train(active)


def infer(
    model: CrossModalModel,
    image_features: np.ndarray,
    text_features: np.ndarray,
    *,
    mc_samples: int = _DEFAULTS.mc_samples,
    dropout_samples: int = 0,
    batch_size: int = _DEFAULTS.batch_size,
    seed: int = 0,
) -> InferenceOutputs:
    """Model outputs for N pairs. image_features: (N, Di), text_features: (N, Dt), float32.

    mc_samples, dropout_samples, batch_size: as in :class:`InferenceConfig` (dropout_samples 0
    gives ``dropout_probs=None``); seed for the sampling and dropout.
    """
    h = model.hparams
    if image_features.ndim != 2 or image_features.shape[1] != h["image_dim"]:
        raise ValueError(f"image_features: expected (N, {h['image_dim']}), got {image_features.shape}")
    n = image_features.shape[0]
    if text_features.shape != (n, h["text_dim"]):
        raise ValueError(f"text_features: expected ({n}, {h['text_dim']}), got {text_features.shape}")
    InferenceConfig(mc_samples=mc_samples, dropout_samples=dropout_samples, batch_size=batch_size)   # validates

    xv_all = torch.from_numpy(np.ascontiguousarray(image_features, dtype=np.float32))
    xt_all = torch.from_numpy(np.ascontiguousarray(text_features, dtype=np.float32))
    c = h["num_classes"]
    keys = ("mu_image", "mu_text", "var_image", "var_text", "probs_image", "probs_text",
            "mc_probs_image", "mc_probs_text", "dropout_probs")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for s in range(0, n, batch_size):
                xv, xt = xv_all[s:s + batch_size], xt_all[s:s + batch_size]
                out = model(xv, xt)
                b = xv.shape[0]
                parts["mu_image"].append(out.mu_image)                       # (B, d)
                parts["mu_text"].append(out.mu_text)                         # (B, d)
                parts["var_image"].append(out.logvar_image.exp())            # (B, d)
                parts["var_text"].append(out.logvar_text.exp())              # (B, d)
                parts["probs_image"].append(out.logits_image.sigmoid())      # (B, C)
                parts["probs_text"].append(out.logits_text.sigmoid())        # (B, C)
                for m in ("image", "text"):
                    mu, logvar = getattr(out, f"mu_{m}"), getattr(out, f"logvar_{m}")
                    eps = torch.randn(b, mc_samples, mu.shape[1])                        # (B, K, d)
                    z = mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps       # (B, K, d)
                    parts[f"mc_probs_{m}"].append(model.classify(z).sigmoid())          # (B, K, C)
                if dropout_samples:
                    _set_dropout(model, True)
                    runs = []
                    for _ in range(dropout_samples):
                        o = model(xv, xt)
                        runs.append(0.5 * (o.logits_image.sigmoid() + o.logits_text.sigmoid()))   # (B, C)
                    _set_dropout(model, False)
                    parts["dropout_probs"].append(torch.stack(runs, dim=1))             # (B, K', C)
    finally:
        model.train(was_training)

    def cat(key: str, empty_shape: tuple[int, ...]) -> np.ndarray:
        if not parts[key]:
            return np.zeros(empty_shape, dtype=np.float32)
        return torch.cat(parts[key]).numpy().astype(np.float32, copy=False)

    d = h["dim"]
    return InferenceOutputs(
        mu_image=cat("mu_image", (0, d)), mu_text=cat("mu_text", (0, d)),
        var_image=cat("var_image", (0, d)), var_text=cat("var_text", (0, d)),
        probs_image=cat("probs_image", (0, c)), probs_text=cat("probs_text", (0, c)),
        mc_probs_image=cat("mc_probs_image", (0, mc_samples, c)), mc_probs_text=cat("mc_probs_text", (0, mc_samples, c)),
        match_a=float(model.match_a.detach()), match_b=float(model.match_b.detach()),
        dropout_probs=cat("dropout_probs", (0, dropout_samples, c)) if dropout_samples else None,
    )


def evaluate_model(model: CrossModalModel, image_features: np.ndarray, text_features: np.ndarray,
                   labels: np.ndarray) -> dict[str, float]:
    """Retrieval metrics (``learner.metrics.evaluate_retrieval``) of the model's means on one split:
    image (N, Di), text (N, Dt), labels (N, C); query set and gallery are both that split."""
    out = infer(model, image_features, text_features, mc_samples=0)
    return {k: float(v) for k, v in evaluate_retrieval(out.mu_image, out.mu_text, labels).items()}
