"""The probabilistic cross-modal model: two Gaussian-embedding encoders and one shared classifier.

Each modality m (image v, text t) has an MLP encoder from its standardised features to a common
space of dimension d, with a mean head (L2-normalised mu_m) and a log-variance head (log sigma_m^2),
so an item is a diagonal Gaussian N(mu_m, sigma_m^2) in the common space. A single linear
classifier on the common space gives C multi-label logits for either modality.

References:
    PCME   Chun, de Rezende, Kalantidis, Larlus. "Probabilistic Embeddings for Cross-Modal
           Retrieval". CVPR 2021. Gaussian embeddings and the match probability
           p(m | z_v, z_t) = sigmoid(-a * ||z_v - z_t|| + b) with learnable a > 0, b.
    ASCMR  Qi et al. "Active Supervised Cross-Modal Retrieval". TPAMI 2025. Intra- and
           inter-modality uncertainty read off these Gaussians (DESIGN §5).
    MC dropout  Gal, Ghahramani. "Dropout as a Bayesian Approximation". ICML 2016; the dropout
           layers inside the encoders are kept for BALD (Houlsby et al. 2011).
    BADGE  Ash et al. "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds".
           ICLR 2020. Why the classifier is one linear layer on mu: the selection code computes
           gradient embeddings (sigmoid(W mu) - round(p)) outer mu from arrays.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ModelOutputs(NamedTuple):
    """The forward pass of B pairs: embeddings of both modalities and their class logits."""

    mu_image: torch.Tensor      # (B, d) unit norm
    logvar_image: torch.Tensor  # (B, d)
    logits_image: torch.Tensor  # (B, C)
    mu_text: torch.Tensor       # (B, d) unit norm
    logvar_text: torch.Tensor   # (B, d)
    logits_text: torch.Tensor   # (B, C)


class GaussianEncoder(nn.Module):
    """MLP from standardised features to a diagonal Gaussian N(mu, sigma^2) in the common space (PCME)."""

    def __init__(self, in_dim: int, hidden: int, dim: int, dropout: float, logvar_init: float) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.mean_head = nn.Linear(hidden, dim)
        self.logvar_head = nn.Linear(hidden, dim)
        nn.init.zeros_(self.logvar_head.weight)
        nn.init.constant_(self.logvar_head.bias, logvar_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)                                   # (B, hidden)
        mu = F.normalize(self.mean_head(h), dim=-1)         # (B, d)
        logvar = self.logvar_head(h).clamp(-12.0, 4.0)      # (B, d)
        return mu, logvar


class CrossModalModel(nn.Module):
    """Two Gaussian encoders, a shared linear classifier and the PCME match parameters a, b.

    The input standardisation (per-feature mean and std, fitted by the trainer) is stored in
    buffers, so a checkpointed model applies it at inference without extra state.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        num_classes: int,
        *,
        dim: int = 256,
        hidden: int = 512,
        dropout: float = 0.2,
        logvar_init: float = -7.0,
        logit_scale: float = 16.0,
    ) -> None:
        super().__init__()
        for name, value in (("image_dim", image_dim), ("text_dim", text_dim), ("num_classes", num_classes),
                            ("dim", dim), ("hidden", hidden)):
            if value < 1:
                raise ValueError(f"CrossModalModel: {name} must be >= 1, got {value}")
        if logit_scale <= 0:
            raise ValueError(f"CrossModalModel: logit_scale must be > 0, got {logit_scale}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CrossModalModel: dropout must be in [0, 1), got {dropout}")
        self.hparams = {"image_dim": image_dim, "text_dim": text_dim, "num_classes": num_classes,
                        "dim": dim, "hidden": hidden, "dropout": dropout, "logvar_init": logvar_init,
                        "logit_scale": logit_scale}
        self.image_encoder = GaussianEncoder(image_dim, hidden, dim, dropout, logvar_init)
        self.text_encoder = GaussianEncoder(text_dim, hidden, dim, dropout, logvar_init)
        self.classifier = nn.Linear(dim, num_classes)
        self.logit_scale = logit_scale
        self.log_match_a = nn.Parameter(torch.tensor(math.log(5.0)))   # a = exp(log_a) > 0
        self.match_b = nn.Parameter(torch.tensor(2.5))
        self.register_buffer("image_mean", torch.zeros(image_dim))
        self.register_buffer("image_std", torch.ones(image_dim))
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("text_std", torch.ones(text_dim))

    @property
    def match_a(self) -> torch.Tensor:
        return self.log_match_a.exp()

    def set_standardisation(self, image_features: np.ndarray, text_features: np.ndarray) -> None:
        """Fit the per-feature mean and std of both modalities (all pairs, labelled or not)."""
        for prefix, feats in (("image", image_features), ("text", text_features)):
            mean = feats.mean(axis=0, dtype=np.float64)
            std = feats.std(axis=0, dtype=np.float64)
            getattr(self, f"{prefix}_mean").copy_(torch.from_numpy(mean.astype(np.float32)))
            getattr(self, f"{prefix}_std").copy_(torch.from_numpy(np.maximum(std, 1e-6).astype(np.float32)))

    def encode_image(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image_encoder((x - self.image_mean) / self.image_std)   # (B, d), (B, d)

    def encode_text(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text_encoder((x - self.text_mean) / self.text_std)      # (B, d), (B, d)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Class logits W (s * z) + c of common-space points z (..., d) -> (..., C).

        The constant s (``logit_scale``) lets logits of unit-norm mu reach useful magnitudes within
        a few hundred steps; it is still one linear map on mu (effective weight s * W).
        """
        return self.classifier(self.logit_scale * z)

    def classify_samples(self, logits_mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Class logits of the K points z_k = mu + sigma * eps_k of each row: ``classify`` of them, computed
        through the classifier's linearity as classify(mu) + s W (sigma * eps_k).

        logits_mu (B, C) = classify(mu), logvar (B, d), eps (K, d) -> (B, K, C): one (B, d) x (d, K C)
        product, with no (B, K, d) tensor (the MC embedding samples of ``learner.inference``).
        """
        (b, d), (k, c) = logvar.shape, (eps.shape[0], logits_mu.shape[1])
        basis = (eps.unsqueeze(2) * (self.logit_scale * self.classifier.weight.T).unsqueeze(0))   # (K, d, C)
        noise = (0.5 * logvar).exp() @ basis.transpose(0, 1).reshape(d, k * c)                  # (B, K C)
        return logits_mu.unsqueeze(1) + noise.view(b, k, c)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> ModelOutputs:
        mu_v, logvar_v = self.encode_image(image_features)   # (B, d)
        mu_t, logvar_t = self.encode_text(text_features)     # (B, d)
        return ModelOutputs(mu_v, logvar_v, self.classify(mu_v), mu_t, logvar_t, self.classify(mu_t))

    def __repr__(self) -> str:
        h = self.hparams
        return (f"CrossModalModel(image_dim={h['image_dim']}, text_dim={h['text_dim']}, "
                f"num_classes={h['num_classes']}, dim={h['dim']}, hidden={h['hidden']}, dropout={h['dropout']})")
