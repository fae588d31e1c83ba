"""The pieces of one ``train_model`` step (DESIGN §4): batch cyclers, loss terms, MemBank anchors.

A step runs one forward pass over a labelled batch (rows ``:nl``) followed by a pool batch (rows
``nl:``). Labelled terms: classification (MemBank, Huang et al., Neurocomputing 2024) and the soft
multi-label contrastive loss (DAGNN, Qian et al., TPAMI 2023). Pool terms: InfoNCE (with SEDE
hard-negative weights when beta > 0, Pan & Huang, IJMIR 2022), the PCME match loss on sampled
embeddings (Chun et al., CVPR 2021, §3.2) and the KL variance regulariser (VIB, Alemi et al. 2017).
MemBank pseudo-labels train the unlabelled rows of the pool batch. The functions assume the
inputs ``train_model`` checked.
"""
from __future__ import annotations

import numpy as np
import torch

from learner import losses
from learner.model import CrossModalModel, ModelOutputs
from learner.train_config import TrainConfig


@torch.no_grad()
def embed(model: CrossModalModel, xv: torch.Tensor, xt: torch.Tensor, batch: int = 2048) -> tuple[torch.Tensor, ...]:
    """Eval-mode (mu_image (N, d), mu_text (N, d), probs_image (N, C), probs_text (N, C)) of all rows."""
    was_training = model.training
    model.eval()
    parts = []
    for s in range(0, xv.shape[0], batch):
        out = model(xv[s:s + batch], xt[s:s + batch])
        parts.append((out.mu_image, out.mu_text, out.logits_image.sigmoid(), out.logits_text.sigmoid()))
    model.train(was_training)
    return tuple(torch.cat(p) for p in zip(*parts))


class Cycler:
    """Endless shuffled pass over an index array, reshuffled each time it is exhausted."""

    def __init__(self, indices: np.ndarray, rng: np.random.Generator) -> None:
        self.indices, self.rng, self.order, self.pos = indices, rng, rng.permutation(indices), 0

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self.pos == self.order.size:
                self.order, self.pos = self.rng.permutation(self.indices), 0
            chunk = self.order[self.pos:self.pos + n]
            self.pos += chunk.size
            n -= chunk.size
            out.append(chunk)
        return np.concatenate(out)


def sample_gaussian(mu: torch.Tensor, logvar: torch.Tensor, k: int) -> torch.Tensor:
    """(B, d), (B, d) -> (B, K, d) reparameterised samples z = mu + sigma * eps (PCME §3.2)."""
    eps = torch.randn(mu.shape[0], k, mu.shape[1], dtype=mu.dtype)
    return mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps


def choose_anchors(lab_train: np.ndarray, unlab_pool: np.ndarray, limit: int, rng: np.random.Generator) -> torch.Tensor:
    """Bank items searched for neighbours this epoch: all when they fit, else labelled first plus a random sample."""
    if lab_train.size + unlab_pool.size <= limit:
        chosen = np.concatenate([lab_train, unlab_pool])
    elif lab_train.size >= limit:
        chosen = rng.choice(lab_train, size=limit, replace=False)
    else:
        chosen = np.concatenate([lab_train, rng.choice(unlab_pool, size=limit - lab_train.size, replace=False)])
    return torch.from_numpy(np.sort(chosen))


def weighted_loss(terms: dict[str, torch.Tensor], config: TrainConfig) -> torch.Tensor:
    """sum_t w_t * L_t over the terms of one step, with w_t = ``config.w_<t>``."""
    return sum(getattr(config, f"w_{name}") * value for name, value in terms.items())


def labelled_terms(out: ModelOutputs, nl: int, y_lab: torch.Tensor, config: TrainConfig,
                   w_lab: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Labelled-batch terms (rows :nl, labels y_lab (nl, C)): classification (MemBank L_cls) and DAGNN.
    w_lab: (nl,) pair weights or None; they weigh the caption as a description of its image (the text
    branch's classification; in DAGNN, the caption as a soft positive and candidate and its own row)."""
    terms: dict[str, torch.Tensor] = {}
    if nl == 0:
        return terms
    if config.use_classification:
        terms["classification"] = losses.classification_loss(out.logits_image[:nl], out.logits_text[:nl], y_lab, w_lab)
    if config.use_dagnn and nl > 1:
        terms["dagnn"] = losses.soft_multilabel_contrastive(out.mu_image[:nl], out.mu_text[:nl], y_lab, config.temperature,
                                                            w_lab)
    return terms


def pool_terms(model: CrossModalModel, out: ModelOutputs, nl: int, config: TrainConfig,
               w_pool: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Pool-batch terms (rows nl:): InfoNCE (+SEDE), PCME match loss, KL variance regulariser.
    w_pool: (B,) pair weights of the pool batch or None; they weigh each pair as a positive of InfoNCE
    and of the match loss (the KL term is per item and unweighted)."""
    terms: dict[str, torch.Tensor] = {}
    mu_v, mu_t = out.mu_image[nl:], out.mu_text[nl:]               # (B, d)
    lv_v, lv_t = out.logvar_image[nl:], out.logvar_text[nl:]       # (B, d)
    if config.use_infonce and mu_v.shape[0] > 1:
        terms["infonce"] = losses.info_nce(mu_v, mu_t, config.temperature, config.hard_negative_beta, w_pool)
    if config.use_match:
        m = config.match_batch_size                                # the pool batch is shuffled
        z_v = sample_gaussian(mu_v[:m], lv_v[:m], config.match_samples)    # (M, K, d)
        z_t = sample_gaussian(mu_t[:m], lv_t[:m], config.match_samples)    # (M, K, d)
        terms["match"] = losses.pcme_match_loss(z_v, z_t, model.match_a, model.match_b,
                                                None if w_pool is None else w_pool[:m])
    if config.use_kl:
        terms["kl"] = 0.5 * (losses.kl_to_standard_normal(mu_v, lv_v) + losses.kl_to_standard_normal(mu_t, lv_t))
    return terms


def membank_term(out: ModelOutputs, nl: int, pool_t: torch.Tensor, unl: torch.Tensor, anchors: torch.Tensor,
                 bank: losses.MemoryBank, y: torch.Tensor, is_lab: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """MemBank pseudo-label loss on the unlabelled rows of the pool batch, one pair-level target for both branches.

    pool_t: (B,) rows of the pool batch; unl: (B,) bool, unlabelled; anchors: (M,) bank rows searched;
    y: (N, C) labels and is_lab: (N,) bool over all rows.
    """
    rows = torch.arange(nl, nl + pool_t.shape[0])[unl]                                   # (U,)
    bank_probs = 0.5 * (bank.probs_image[anchors] + bank.probs_text[anchors])            # (M, C)
    targets = torch.where(is_lab[anchors].unsqueeze(1), y[anchors], bank_probs)          # (M, C)
    exclude = pool_t[unl].unsqueeze(1) == anchors.unsqueeze(0)                           # (U, M)
    q = 0.5 * sum(losses.knn_label_propagation(mu[rows].detach(), bank_mu[anchors], targets, k=config.knn_k,
                                                temperature=config.bank_temperature, exclude=exclude)
                  for mu, bank_mu in ((out.mu_image, bank.mu_image), (out.mu_text, bank.mu_text)))  # (U, C)
    own = 0.5 * (out.logits_image[rows].sigmoid() + out.logits_text[rows].sigmoid()).detach()   # (U, C)
    target, weight = losses.adjust_pseudo_labels(q, own, config.pseudo_threshold)
    return 0.5 * (losses.weighted_bce(out.logits_image[rows], target, weight)
                  + losses.weighted_bce(out.logits_text[rows], target, weight))
