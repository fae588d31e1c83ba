"""Training losses of the cross-modal learner (DESIGN §4), as pure functions on tensors.

Every function takes batch tensors with the shapes in its docstring and returns a scalar loss
(or, for the pseudo-labeller, the targets). ``MemoryBank`` is the only stateful piece: the
per-pair, per-modality embeddings and class probabilities that the MemBank pseudo-labels read.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


_TINY_WEIGHT = 1e-12  # a candidate at weight 0 enters a softmax as log(1e-12) = -27.6, not -inf (no NaN)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """sum_i w_i v_i / sum_i w_i over (B,) values; the plain mean without weights, 0 when every weight is 0."""
    if weights is None:
        return values.mean()
    return (weights * values).sum() / weights.sum().clamp_min(1e-12)


def classification_loss(logits_image: torch.Tensor, logits_text: torch.Tensor, labels: torch.Tensor,
                        text_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label BCE-with-logits on both modalities of labelled pairs (MemBank; DESIGN §4 "Classification").

    logits_image, logits_text: (B, C); labels: (B, C) in {0, 1}. text_weights: (B,) >= 0 or None, how much
    each pair's caption counts as describing its image (the labels do): the text branch's per-pair BCE is
    averaged with these weights, the image branch's plainly. Returns the mean over both branches.
    """
    image = F.binary_cross_entropy_with_logits(logits_image, labels)
    text = F.binary_cross_entropy_with_logits(logits_text, labels, reduction="none").mean(1)     # (B,)
    return 0.5 * (image + _weighted_mean(text, text_weights))


def info_nce(mu_image: torch.Tensor, mu_text: torch.Tensor, temperature: float, hard_negative_beta: float = 0.0,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between paired embeddings, optionally with SEDE hard-negative weights.

    mu_image, mu_text: (B, d), L2-normalised; pair i is (mu_image[i], mu_text[i]). weights: (B,) in
    [0, 1] or None (all 1), soft correspondence (after NCR, Huang et al., NeurIPS 2021): pair i's two
    rows (its image's query, its caption's query) enter the mean with weight w_i,
    sum_i w_i l_i / sum_i w_i, and as a negative of the other rows its caption (image) counts w_i times,
    exp(s_ik/tau) -> w_k exp(s_ik/tau); so w_i = 0 takes a mismatched pair out entirely (a caption
    swapped in from another class would otherwise be a false negative for that class's images).
    Loss (Oord et al. 2018; CLIP, Radford et al. 2021), per row i:
        -log exp(s_ii/tau) / (exp(s_ii/tau) + sum_{k != i} w_ik exp(s_ik/tau))
    with s = cosine similarity. SEDE (Pan & Huang, IJMIR 2022) weights negatives by
    w_ik = (B - 1) * softmax_{k != i}(beta * s_ik), detached, so harder negatives count more;
    beta = 0 gives w = 1, plain InfoNCE. Averaged over image->text and text->image.
    """
    b = mu_image.shape[0]
    sim = mu_image @ mu_text.T                                           # (B, B)
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    target = torch.arange(b, device=sim.device)
    losses = []
    for s in (sim, sim.T):
        logits = s / temperature                                         # (B, B)
        if hard_negative_beta != 0.0 and b > 1:
            neg = (hard_negative_beta * s.detach()).masked_fill(eye, float("-inf"))
            log_w = math.log(b - 1) + torch.log_softmax(neg, dim=1)      # (B, B), -inf on diagonal
            logits = logits + log_w.masked_fill(eye, 0.0)
        if weights is not None:
            logits = logits + torch.log(weights).unsqueeze(0).masked_fill(eye, 0.0)   # w_k on negative k
        losses.append(_weighted_mean(F.cross_entropy(logits, target, reduction="none"), weights))
    return 0.5 * (losses[0] + losses[1])


def jaccard_matrix(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """Label-set Jaccard overlap |y_i & y_j| / |y_i | y_j| for (Ba, C) x (Bb, C) -> (Ba, Bb); 0 when both are empty."""
    inter = labels_a @ labels_b.T                                                  # (Ba, Bb)
    union = labels_a.sum(1, keepdim=True) + labels_b.sum(1, keepdim=True).T - inter  # (Ba, Bb)
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def soft_multilabel_contrastive(mu_image: torch.Tensor, mu_text: torch.Tensor, labels: torch.Tensor, temperature: float,
                                pair_weights: torch.Tensor | None = None) -> torch.Tensor:
    """DAGNN soft multi-label contrastive loss on labelled pairs (Qian et al., TPAMI 2023; DESIGN §4).

    mu_image, mu_text: (B, d), L2-normalised; labels: (B, C) in {0, 1}, the labels of each pair's image.
    Cross-modal positives of query i are weighted by label Jaccard overlap J_ij (J_ii = 1, the
    pair itself): target t_ij = J_ij / sum_j J_ij, loss = -sum_j t_ij log softmax_j(s_ij / tau),
    averaged over rows and over image->text and text->image. pair_weights: (B,) in [0, 1] or None (all
    1): how far caption j carries its image's labels (soft correspondence). Image->text: caption j
    counts w_j times, as a soft positive (t_ij = J_ij w_j / sum_j J_ij, normalised by the unweighted
    overlap, so the pull on a caption falls smoothly to 0 with its weight and a mismatched pair, w_j = 0,
    is neither its own positive nor one of its image's class) and as a candidate in the softmax
    (exp(s_ij / tau) w_j, as in :func:`info_nce`). Text->image: caption j's row enters the mean with
    weight w_j. All 1 is the plain loss; a row left without positives has target 0 (contributes nothing).
    """
    sim = mu_image @ mu_text.T / temperature                             # (B, B)
    jaccard = jaccard_matrix(labels, labels)                             # (B, B)
    jaccard.diagonal().fill_(1.0)
    if pair_weights is None:
        pair_weights = torch.ones(sim.shape[0], dtype=sim.dtype, device=sim.device)
    w = pair_weights.to(sim)                                             # (B,)
    i2t_targets = _row_normalised(jaccard) * w.unsqueeze(0)              # (B, B), caption j weighted w_j
    candidates = torch.log(w.clamp_min(_TINY_WEIGHT)).unsqueeze(0)      # finite even for a row of zeros
    i2t = -(i2t_targets * torch.log_softmax(sim + candidates, dim=1)).sum(1).mean()
    t2i_rows = -(_row_normalised(jaccard) * torch.log_softmax(sim.T, dim=1)).sum(1)   # (B,) per caption
    t2i = _weighted_mean(t2i_rows, w)
    return 0.5 * (i2t + t2i)


def _row_normalised(weights: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum to 1 (rows of zeros stay 0). (B, B)"""
    return weights / weights.sum(1, keepdim=True).clamp_min(1e-12)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over d, mean over B (VIB, Alemi et al. ICLR 2017; PCME).

    mu, logvar: (B, d). Zero exactly at mu = 0, logvar = 0.
    """
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(1).mean()


def pcme_match_loss(z_image: torch.Tensor, z_text: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """PCME soft contrastive loss on sampled embeddings (Chun et al., CVPR 2021).

    z_image, z_text: (B, K, d), K samples z ~ N(mu, sigma^2) of each of B pairs; a > 0, b scalars.
    p_ij = mean_{k,l} sigmoid(-a * ||z_v^{ik} - z_t^{jl}|| + b); positives are the true pairs
    (i = j). Loss = mean_i -log p_ii + mean_{i != j} -log(1 - p_ij): positives and negatives are
    averaged separately so the B - 1 negatives per row do not swamp the positive. weights: (B,) >= 0
    or None: the positives' mean is weighted by w_i (a mismatched pair, w_i = 0, is not taught to match).
    """
    bsz, k, d = z_image.shape
    dist = torch.cdist(z_image.reshape(bsz * k, d), z_text.reshape(bsz * k, d))        # (B*K, B*K)
    p = torch.sigmoid(-a * dist + b).reshape(bsz, k, bsz, k).mean(dim=(1, 3))          # (B, B)
    p = p.clamp(1e-6, 1 - 1e-6)
    eye = torch.eye(bsz, dtype=torch.bool, device=p.device)
    pos = _weighted_mean(-torch.log(p[eye]), weights)
    if bsz == 1:
        return pos
    return pos - torch.log1p(-p[~eye]).mean()


def knn_label_propagation(
    query_mu: torch.Tensor,
    bank_mu: torch.Tensor,
    bank_targets: torch.Tensor,
    *,
    k: int,
    temperature: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """MemBank neighbour labels q_u (Huang et al., Neurocomputing 2024; DESIGN §4).

    query_mu: (B, d) L2-normalised embeddings; bank_mu: (M, d) bank embeddings; bank_targets:
    (M, C), y~_j = the true labels of labelled bank items and the bank probabilities of the
    others; exclude: (B, M) bool, True where a bank item may not be a neighbour (the query itself).

        q_u = sum_{j in kNN(u)} softmax_j(mu_u . mu_j / tau) * y~_j          -> (B, C), detached
    """
    with torch.no_grad():
        sim = query_mu @ bank_mu.T                                        # (B, M)
        available = bank_mu.shape[0]
        if exclude is not None:
            sim = sim.masked_fill(exclude, float("-inf"))
            available -= int(exclude.sum(1).max())
        top_sim, top_idx = sim.topk(max(min(k, available), 1), dim=1)    # (B, k)
        attn = torch.softmax(top_sim / temperature, dim=1)                # (B, k)
        return (attn.unsqueeze(2) * bank_targets[top_idx]).sum(1)         # (B, C)


def adjust_pseudo_labels(q: torch.Tensor, probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjust neighbour labels with the model's own prediction and keep the confident classes.

    q, probs: (B, C). MemBank's adjustment by class probabilities (DESIGN §4) with SCH-JHM's
    confidence filter (KBS 2024):
      1. a_u = sqrt(q_u * p_u), rescaled so that sum_c a_uc = sum_c q_uc (keeps the expected
         number of labels), clipped to [0, 1];
      2. confidence c_uc = max(a_uc, 1 - a_uc); a class is kept when c_uc >= threshold, with
         target round(a_uc) and weight c_uc (weight 0 otherwise).
    Returns (targets, weights), both (B, C), detached; use with ``weighted_bce``.
    """
    with torch.no_grad():
        adjusted = torch.sqrt(q * probs)                                  # (B, C)
        scale = q.sum(1, keepdim=True) / adjusted.sum(1, keepdim=True).clamp_min(1e-12)
        adjusted = (adjusted * scale).clamp(0.0, 1.0)
        confidence = torch.maximum(adjusted, 1.0 - adjusted)
        weights = torch.where(confidence >= threshold, confidence, torch.zeros_like(confidence))
        return adjusted.round(), weights


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Confidence-weighted BCE on pseudo-labels (MemBank; DESIGN §4): sum(w * bce) / (B * C); logits, targets, weights (B, C)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")   # (B, C)
    return (weights * bce).sum() / bce.numel()


class MemoryBank:
    """Per-pair, per-modality memory of mu (N, d) and class probabilities p (N, C) (MemBank; DESIGN §4).

    Entries are updated with momentum m each time a pair is seen (once per epoch):
    bank <- m * bank + (1 - m) * new, with mu re-normalised to unit length.
    """

    def __init__(self, mu_image: torch.Tensor, mu_text: torch.Tensor, probs_image: torch.Tensor,
                 probs_text: torch.Tensor, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MemoryBank: momentum must be in [0, 1), got {momentum}")
        n = mu_image.shape[0]
        for name, t in (("mu_text", mu_text), ("probs_image", probs_image), ("probs_text", probs_text)):
            if t.shape[0] != n:
                raise ValueError(f"MemoryBank: {name} must have {n} rows, got {t.shape[0]}")
        self.mu_image = mu_image.detach().clone()        # (N, d)
        self.mu_text = mu_text.detach().clone()          # (N, d)
        self.probs_image = probs_image.detach().clone()  # (N, C)
        self.probs_text = probs_text.detach().clone()    # (N, C)
        self.momentum = momentum

    def update(self, index: torch.Tensor, mu_image: torch.Tensor, mu_text: torch.Tensor,
               probs_image: torch.Tensor, probs_text: torch.Tensor) -> None:
        """Momentum update of rows ``index`` (B,) with new mu (B, d) and probabilities (B, C)."""
        m = self.momentum
        with torch.no_grad():
            for name, new in (("mu_image", mu_image), ("mu_text", mu_text)):
                bank = getattr(self, name)
                bank[index] = F.normalize(m * bank[index] + (1 - m) * new.detach(), dim=1)
            for name, new in (("probs_image", probs_image), ("probs_text", probs_text)):
                bank = getattr(self, name)
                bank[index] = m * bank[index] + (1 - m) * new.detach()
