"""Training of the cross-modal model (DESIGN §4): semi-supervised losses, AdamW, early stopping.

Each step draws a *labelled batch* (classification + DAGNN soft contrastive) and a *pool batch*
from every training pair (InfoNCE, PCME match, KL; MemBank pseudo-labels on its unlabelled rows),
and runs one forward pass over both. Early stopping watches the average mAP on a validation split
carved from the labelled pairs only; those pairs take no part in training.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from learner import losses
from learner.metrics import evaluate_retrieval
from learner.model import CrossModalModel

logger = logging.getLogger(__name__)
VAL_SPLIT_STREAM = 1  # a second seed word, so the split does not share draws with batching


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``train_model``. Defaults were chosen on a validation split of the Wikipedia
    train split (docs/learner.md).

    Model:       dim (common space, 256), hidden (MLP width, 512), dropout (0.2, also drives MC dropout).
    Optimiser:   lr (3e-4), weight_decay (1e-4, AdamW), epochs (max, 40), max_steps (optimiser steps
                 after which training ends with the current epoch, 600: bounds the time on large
                 pools; Wikipedia-sized pools stop earlier), batch_size (pool batch, 512),
                 labelled_batch_size (128), min_steps_per_epoch (10: small labelled sets still get
                 enough updates), patience (epochs without validation gain before stopping, 6),
                 min_epochs (epochs trained before a model may be selected, 5: tiny validation
                 splits otherwise often pick an undertrained first epoch),
                 val_fraction (of the labelled pairs held out for early stopping, 0.2), seed (0).
    Pool:        use_unlabelled (True: the pool batch draws from every pair; False: from the
                 labelled training pairs only, the supervised-only baseline).
    Loss terms:  use_* switches and w_* weights for classification (BCE), dagnn (soft multi-label
                 contrastive), infonce (pairing; hard_negative_beta > 0 turns on SEDE weights),
                 membank (pseudo-labels), kl (variance regulariser), match (PCME soft contrastive
                 on match_samples samples per item, over the first match_batch_size pairs of the
                 pool batch: the (B*K)^2 distances dominated the step time); temperature (0.2) for the contrastive terms.
                 On by default: classification, dagnn, infonce, match, kl. Off: SEDE weights
                 (beta 0) and membank, which did not beat their absence on validation.
    MemBank:     knn_k (10), bank_temperature (0.1), pseudo_threshold (confidence to keep a class,
                 0.8), bank_momentum (0.5), bank_anchors (most bank items searched per epoch, 4096:
                 the labelled ones first, then a random sample), membank_warmup_epochs (2).
    """

    dim: int = 256
    hidden: int = 512
    dropout: float = 0.2
    lr: float = 3e-4
    weight_decay: float = 1e-4
    epochs: int = 40
    max_steps: int = 600
    batch_size: int = 512
    labelled_batch_size: int = 128
    min_steps_per_epoch: int = 10
    patience: int = 6
    min_epochs: int = 5
    val_fraction: float = 0.2
    seed: int = 0
    use_unlabelled: bool = True
    temperature: float = 0.2
    use_classification: bool = True
    w_classification: float = 1.0
    use_dagnn: bool = True
    w_dagnn: float = 0.5
    use_infonce: bool = True
    w_infonce: float = 0.5
    hard_negative_beta: float = 0.0
    use_membank: bool = False
    w_membank: float = 1.0
    knn_k: int = 10
    bank_temperature: float = 0.1
    pseudo_threshold: float = 0.8
    bank_momentum: float = 0.5
    bank_anchors: int = 4096
    membank_warmup_epochs: int = 2
    use_kl: bool = True
    w_kl: float = 1e-4
    use_match: bool = True
    w_match: float = 0.1
    match_samples: int = 2
    match_batch_size: int = 128

    def __post_init__(self) -> None:
        positive = ("dim", "hidden", "epochs", "max_steps", "batch_size", "labelled_batch_size", "min_steps_per_epoch",
                    "patience", "min_epochs", "knn_k", "bank_anchors", "match_samples",
                    "match_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("lr", "temperature", "bank_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name}: expected > 0, got {getattr(self, name)}")
        for name in ("dropout", "val_fraction", "bank_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name}: expected in [0, 1), got {getattr(self, name)}")
        terms = ("classification", "dagnn", "infonce", "membank", "kl", "match")
        if not any(getattr(self, f"use_{t}") for t in terms):
            raise ValueError(f"TrainConfig: at least one of {', '.join('use_' + t for t in terms)} must be True")
        if not 0.5 <= self.pseudo_threshold <= 1.0:
            raise ValueError(f"TrainConfig.pseudo_threshold: expected in [0.5, 1], got {self.pseudo_threshold}")


@dataclass(frozen=True)
class TrainResult:
    """model: the best model (by validation avg mAP; the last one when there is no validation split).
    history: one dict per epoch (epoch, steps, loss and each term's mean, val_avg when validated, seconds).
    best_epoch: 1-based. best_metrics: ``evaluate_retrieval`` keys on the validation split at the best epoch
    (empty without one). n_train, n_val: labelled pairs trained on and held out. seconds: wall time."""

    model: CrossModalModel
    history: tuple[dict[str, float], ...]
    best_epoch: int
    best_metrics: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    seconds: float = 0.0


def _validate_inputs(image_features: np.ndarray, text_features: np.ndarray, labels: np.ndarray,
                     labelled: np.ndarray, init_model: CrossModalModel | None) -> None:
    if image_features.ndim != 2:
        raise ValueError(f"image_features: expected (N, Di), got shape {image_features.shape}")
    n = image_features.shape[0]
    if n < 2:
        raise ValueError(f"image_features: need at least 2 pairs, got {n}")
    if text_features.ndim != 2 or text_features.shape[0] != n:
        raise ValueError(f"text_features: expected ({n}, Dt), got shape {text_features.shape}")
    if labels.ndim != 2 or labels.shape[0] != n:
        raise ValueError(f"labels: expected ({n}, C), got shape {labels.shape}")
    if labelled.shape != (n,) or labelled.dtype != np.bool_:
        raise ValueError(f"labelled: expected a bool array of shape ({n},), got {labelled.dtype} {labelled.shape}")
    if not np.isin(labels[labelled], (0.0, 1.0)).all():
        raise ValueError("labels: expected 0/1 values on labelled rows")
    for name, arr in (("image_features", image_features), ("text_features", text_features)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains NaN or inf")
    if init_model is not None:
        h = init_model.hparams
        expected = (image_features.shape[1], text_features.shape[1], labels.shape[1])
        if (h["image_dim"], h["text_dim"], h["num_classes"]) != expected:
            raise ValueError(f"init_model: built for (image_dim, text_dim, num_classes) = "
                             f"{(h['image_dim'], h['text_dim'], h['num_classes'])}, data has {expected}")


def _split_labelled(labelled: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labelled indices -> (train, val); no validation split when it would hold < 2 pairs.

    Row i is a validation row when u_i < val_fraction, with u drawn once per row from ``seed``: the
    assignment depends only on the row, never on which other rows are labelled. So when labels
    arrive between rounds, a pair that trained a warm-started model never turns into a validation
    pair (which would inflate validation mAP and defeat early stopping).
    """
    lab = np.flatnonzero(labelled)
    u = np.random.default_rng([seed, VAL_SPLIT_STREAM]).random(labelled.size)
    in_val = u[lab] < val_fraction
    if in_val.sum() < 2 or in_val.all():
        return lab, np.empty(0, dtype=np.int64)
    return lab[~in_val], lab[in_val]


@torch.no_grad()
def _embed(model: CrossModalModel, xv: torch.Tensor, xt: torch.Tensor, batch: int = 2048) -> tuple[torch.Tensor, ...]:
    """Eval-mode (mu_image, mu_text, probs_image, probs_text) of all rows."""
    was_training = model.training
    model.eval()
    parts = []
    for s in range(0, xv.shape[0], batch):
        out = model(xv[s:s + batch], xt[s:s + batch])
        parts.append((out.mu_image, out.mu_text, out.logits_image.sigmoid(), out.logits_text.sigmoid()))
    model.train(was_training)
    return tuple(torch.cat(p) for p in zip(*parts))


class _Cycler:
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


def _sample_gaussian(mu: torch.Tensor, logvar: torch.Tensor, k: int) -> torch.Tensor:
    """(B, d), (B, d) -> (B, K, d) reparameterised samples z = mu + sigma * eps."""
    eps = torch.randn(mu.shape[0], k, mu.shape[1], dtype=mu.dtype)
    return mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps


def train_model(
    image_features: np.ndarray,
    text_features: np.ndarray,
    labels: np.ndarray,
    labelled: np.ndarray,
    config: TrainConfig = TrainConfig(),
    *,
    init_model: CrossModalModel | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> TrainResult:
    """Train (or warm-start) a ``CrossModalModel`` on N pairs.

    image_features: (N, Di) float32; text_features: (N, Dt) float32; labels: (N, C) 0/1 (rows of
    unlabelled pairs are ignored); labelled: (N,) bool. ``init_model`` is copied, never modified;
    it keeps its input standardisation (a new model fits it on all N pairs). ``progress(fraction,
    message)`` is called after every epoch. Full supervision is ``labelled`` all True.
    """
    _validate_inputs(image_features, text_features, labels, labelled, init_model)
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    n, n_classes = labels.shape
    lab_train, val_idx = _split_labelled(labelled, config.val_fraction, config.seed)
    is_lab_train = np.zeros(n, dtype=bool)
    is_lab_train[lab_train] = True
    in_val = np.zeros(n, dtype=bool)
    in_val[val_idx] = True
    pool = np.flatnonzero(~in_val) if config.use_unlabelled else lab_train
    unlab_pool = pool[~is_lab_train[pool]]
    if pool.size == 0:
        raise ValueError("labelled: use_unlabelled=False needs at least one labelled training pair")
    if lab_train.size == 0:
        logger.warning("train_model: no labelled training pairs; only the pairing terms train the model")

    if init_model is None:
        model = CrossModalModel(image_features.shape[1], text_features.shape[1], n_classes,
                                dim=config.dim, hidden=config.hidden, dropout=config.dropout)
        model.set_standardisation(image_features, text_features)
    else:
        model = copy.deepcopy(init_model)
    model.train()
    xv = torch.from_numpy(np.ascontiguousarray(image_features, dtype=np.float32))   # (N, Di)
    xt = torch.from_numpy(np.ascontiguousarray(text_features, dtype=np.float32))    # (N, Dt)
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))            # (N, C)
    y_val = labels[val_idx].astype(np.float32)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    bank = None
    if config.use_membank and unlab_pool.size > 0 and lab_train.size > 0:
        bank = losses.MemoryBank(*_embed(model, xv, xt), momentum=config.bank_momentum)
    lab_cycle = _Cycler(lab_train, rng) if lab_train.size else None
    pool_cycle = _Cycler(pool, rng)
    lab_bs = min(config.labelled_batch_size, lab_train.size)
    steps = max(math.ceil(pool.size / config.batch_size), math.ceil(lab_train.size / config.labelled_batch_size),
                config.min_steps_per_epoch)
    is_lab_t = torch.from_numpy(is_lab_train)

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state, best_metrics, stale = -math.inf, 0, None, {}, 0
    for epoch in range(1, config.epochs + 1):
        t_epoch = time.perf_counter()
        sums: dict[str, float] = {"loss": 0.0}
        anchors = None
        if bank is not None and epoch > config.membank_warmup_epochs:
            anchors = _choose_anchors(lab_train, unlab_pool, config.bank_anchors, rng)
        for _ in range(steps):
            lab_b = lab_cycle.take(lab_bs) if lab_cycle is not None else np.empty(0, dtype=np.int64)
            pool_b = pool_cycle.take(min(config.batch_size, pool.size))
            idx = torch.from_numpy(np.concatenate([lab_b, pool_b]))
            out = model(xv[idx], xt[idx])
            nl = lab_b.size
            terms = _loss_terms(out, nl, y[idx[:nl]], config)
            terms.update(_pool_terms(model, out, nl, config))
            if anchors is not None:
                pool_t = idx[nl:]
                unl = ~is_lab_t[pool_t]
                if unl.any():
                    terms["membank"] = _membank_term(out, nl, pool_t, unl, anchors, bank, y, is_lab_t, config)
            if not terms:       # e.g. only labelled terms switched on and no labelled pair
                continue
            loss = sum(_weight(config, k) * v for k, v in terms.items())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if bank is not None:
                bank.update(idx[nl:], out.mu_image[nl:], out.mu_text[nl:],
                            out.logits_image[nl:].sigmoid(), out.logits_text[nl:].sigmoid())
            sums["loss"] += float(loss.detach())
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        record = {"epoch": float(epoch), "steps": float(steps), **{k: v / steps for k, v in sums.items()}}
        if val_idx.size:
            mu_v, mu_t, _, _ = _embed(model, xv[val_idx], xt[val_idx])
            metrics = evaluate_retrieval(mu_v.numpy(), mu_t.numpy(), y_val, ks=(), precision_ks=())
            record["val_avg"] = metrics["avg"]
            if epoch >= config.min_epochs and metrics["avg"] > best_score:
                best_score, best_epoch, best_metrics, stale = metrics["avg"], epoch, metrics, 0
                best_state = copy.deepcopy(model.state_dict())
            elif epoch >= config.min_epochs:
                stale += 1
        record["seconds"] = time.perf_counter() - t_epoch
        history.append(record)
        logger.debug("epoch %d: %s", epoch, record)
        out_of_steps = epoch * steps >= config.max_steps
        stop = out_of_steps or (bool(val_idx.size) and stale >= config.patience)
        if progress is not None:
            val_msg = f", val mAP {record['val_avg']:.3f}" if "val_avg" in record else ""
            progress(1.0 if stop else epoch / config.epochs,
                     f"epoch {epoch}/{config.epochs}: loss {record['loss']:.3f}{val_msg}" + (" (stopped)" if stop else ""))
        if stop:
            break
    if best_state is None:
        best_epoch = len(history)
    else:
        model.load_state_dict(best_state)
    model.eval()
    seconds = time.perf_counter() - start
    logger.info("trained %d epochs (best %d) on %d labelled + %d unlabelled pairs in %.1f s",
                len(history), best_epoch, lab_train.size, unlab_pool.size, seconds)
    return TrainResult(model, tuple(history), best_epoch, best_metrics, int(lab_train.size), int(val_idx.size), seconds)


def _choose_anchors(lab_train: np.ndarray, unlab_pool: np.ndarray, limit: int, rng: np.random.Generator) -> torch.Tensor:
    """Bank items searched for neighbours this epoch: all when they fit, else labelled first plus a random sample."""
    if lab_train.size + unlab_pool.size <= limit:
        chosen = np.concatenate([lab_train, unlab_pool])
    elif lab_train.size >= limit:
        chosen = rng.choice(lab_train, size=limit, replace=False)
    else:
        chosen = np.concatenate([lab_train, rng.choice(unlab_pool, size=limit - lab_train.size, replace=False)])
    return torch.from_numpy(np.sort(chosen))


def _weight(config: TrainConfig, term: str) -> float:
    return getattr(config, f"w_{term}")


def _loss_terms(out, nl: int, y_lab: torch.Tensor, config: TrainConfig) -> dict[str, torch.Tensor]:
    """Labelled-batch terms (rows :nl): classification (MemBank L_cls) and DAGNN soft contrastive."""
    terms: dict[str, torch.Tensor] = {}
    if nl == 0:
        return terms
    if config.use_classification:
        terms["classification"] = losses.classification_loss(out.logits_image[:nl], out.logits_text[:nl], y_lab)
    if config.use_dagnn and nl > 1:
        terms["dagnn"] = losses.soft_multilabel_contrastive(out.mu_image[:nl], out.mu_text[:nl], y_lab, config.temperature)
    return terms


def _pool_terms(model: CrossModalModel, out, nl: int, config: TrainConfig) -> dict[str, torch.Tensor]:
    """Pool-batch terms (rows nl:): InfoNCE (+SEDE), PCME match loss, KL variance regulariser."""
    terms: dict[str, torch.Tensor] = {}
    mu_v, mu_t = out.mu_image[nl:], out.mu_text[nl:]               # (B, d)
    lv_v, lv_t = out.logvar_image[nl:], out.logvar_text[nl:]       # (B, d)
    if config.use_infonce and mu_v.shape[0] > 1:
        terms["infonce"] = losses.info_nce(mu_v, mu_t, config.temperature, config.hard_negative_beta)
    if config.use_match:
        m = config.match_batch_size                                # the pool batch is shuffled
        z_v = _sample_gaussian(mu_v[:m], lv_v[:m], config.match_samples)   # (M, K, d)
        z_t = _sample_gaussian(mu_t[:m], lv_t[:m], config.match_samples)   # (M, K, d)
        terms["match"] = losses.pcme_match_loss(z_v, z_t, model.match_a, model.match_b)
    if config.use_kl:
        terms["kl"] = 0.5 * (losses.kl_to_standard_normal(mu_v, lv_v) + losses.kl_to_standard_normal(mu_t, lv_t))
    return terms


def _membank_term(out, nl: int, pool_t: torch.Tensor, unl: torch.Tensor, anchors: torch.Tensor,
                  bank: losses.MemoryBank, y: torch.Tensor, is_lab: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """MemBank pseudo-label loss on the unlabelled rows of the pool batch, one pair-level target for both branches."""
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
