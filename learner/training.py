"""Training of the cross-modal model (DESIGN §4): semi-supervised losses, AdamW, early stopping
or stochastic weight averaging (``TrainConfig.averaging``).

Each step draws a *labelled batch* (classification + DAGNN soft contrastive) and a *pool batch*
from every training pair (InfoNCE, PCME match, KL; MemBank pseudo-labels on its unlabelled rows),
and runs one forward pass over both (``learner.train_steps``). Early stopping
(``learner.early_stopping``) is called after every epoch and watches the average mAP on a
validation split carved from the labelled pairs only; those pairs take no part in training.
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
from torch.optim.swa_utils import AveragedModel

from learner import losses
from learner.early_stopping import EarlyStopping
from learner.model import CrossModalModel
from learner.train_config import TrainConfig
from learner.train_steps import (
    Cycler, choose_anchors, embed, labelled_terms, membank_term, pool_terms, weighted_loss,
)

__all__ = ["TrainConfig", "TrainResult", "train_model"]

logger = logging.getLogger(__name__)
VAL_SPLIT_STREAM = 1  # a second seed word, so the split does not share draws with batching


@dataclass(frozen=True)
class TrainResult:
    """model: the best model (by validation avg mAP; the last one when there is no validation split;
    the averaged weights with ``averaging="swa"``).
    history: one dict per epoch (epoch, steps, loss and each term's mean, val_avg when validated, seconds).
    best_epoch: 1-based. best_metrics: ``evaluate_retrieval`` keys on the validation split at the best epoch
    (empty without one). n_train, n_val: labelled pairs trained on and held out. seconds: wall time.
    val_rows: the held-out rows (sorted indices into the N pairs)."""

    model: CrossModalModel
    history: tuple[dict[str, float], ...]
    best_epoch: int
    best_metrics: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    seconds: float = 0.0
    val_rows: tuple[int, ...] = ()


def _validate_inputs(image_features: np.ndarray, text_features: np.ndarray, labels: np.ndarray,
                     labelled: np.ndarray, init_model: CrossModalModel | None, validation: np.ndarray | None) -> None:
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
    if validation is not None:
        validation = np.asarray(validation)
        if validation.ndim != 1 or (validation.size and not np.issubdtype(validation.dtype, np.integer)):
            raise ValueError(f"validation: expected a 1-d array of row indices, got {validation.dtype} {validation.shape}")
        if validation.size and (validation.min() < 0 or validation.max() >= n or not labelled[validation].all()):
            raise ValueError(f"validation: every row must be a labelled row in [0, {n})")
    for name, arr in (("image_features", image_features), ("text_features", text_features)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains NaN or inf")
    if init_model is not None:
        h = init_model.hparams
        expected = (image_features.shape[1], text_features.shape[1], labels.shape[1])
        if (h["image_dim"], h["text_dim"], h["num_classes"]) != expected:
            raise ValueError(f"init_model: built for (image_dim, text_dim, num_classes) = "
                             f"{(h['image_dim'], h['text_dim'], h['num_classes'])}, data has {expected}")


def _pair_weights(pair_weights: np.ndarray, n: int) -> torch.Tensor:
    """Checked (N,) pair weights in [0, 1] as a float32 tensor."""
    w = np.asarray(pair_weights)
    if w.shape != (n,) or not np.issubdtype(w.dtype, np.number):
        raise ValueError(f"pair_weights: expected ({n},) numbers, got {w.dtype} {w.shape}")
    if not (np.isfinite(w).all() and (w >= 0).all() and (w <= 1).all()):
        raise ValueError("pair_weights: expected finite values in [0, 1]")
    return _tensor(w)


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


@dataclass(frozen=True)
class _Split:
    """Rows of one run: lab_train (labelled, trained on), val (labelled, held out), pool (rows the
    pool batch draws from), unlab_pool (pool rows without labels); int64 index arrays."""

    lab_train: np.ndarray
    val: np.ndarray
    pool: np.ndarray
    unlab_pool: np.ndarray


def _make_split(labelled: np.ndarray, config: TrainConfig, validation: np.ndarray | None) -> _Split:
    if validation is None:
        lab_train, val = _split_labelled(labelled, config.val_fraction, config.seed)
    else:
        val = np.unique(validation).astype(np.int64)
        if val.size < 2:                       # as above: no early stopping on fewer than 2 pairs
            val = np.empty(0, dtype=np.int64)
        in_given = np.zeros(labelled.size, dtype=bool)
        in_given[val] = True
        lab_train = np.flatnonzero(labelled & ~in_given)
    is_lab_train = np.zeros(labelled.size, dtype=bool)
    is_lab_train[lab_train] = True
    in_val = np.zeros(labelled.size, dtype=bool)
    in_val[val] = True
    pool = np.flatnonzero(~in_val) if config.use_unlabelled else lab_train
    if pool.size == 0:
        raise ValueError("labelled: use_unlabelled=False needs at least one labelled training pair")
    if lab_train.size == 0:
        logger.warning("train_model: no labelled training pairs; only the pairing terms train the model")
    return _Split(lab_train, val, pool, pool[~is_lab_train[pool]])


def _initial_model(image_features: np.ndarray, text_features: np.ndarray, n_classes: int, config: TrainConfig,
                   init_model: CrossModalModel | None) -> CrossModalModel:
    """A copy of ``init_model``, or a new model standardised on all N pairs; in train mode."""
    if init_model is None:
        model = CrossModalModel(image_features.shape[1], text_features.shape[1], n_classes,
                                dim=config.dim, hidden=config.hidden, dropout=config.dropout)
        model.set_standardisation(image_features, text_features)
    else:
        model = copy.deepcopy(init_model)
    return model.train()


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class _Epochs:
    """The optimisation state of one run: model, AdamW, MemBank (when on), shuffled batch cyclers.

    xv: (N, Di), xt: (N, Dt), y: (N, C) float32 tensors of all rows. Draws from ``rng`` in a fixed
    order (labelled cycler, pool cycler, then per epoch the bank anchors and per step the batches),
    so a seed fixes the run.
    """

    def __init__(self, model: CrossModalModel, xv: torch.Tensor, xt: torch.Tensor, y: torch.Tensor,
                 split: _Split, config: TrainConfig, rng: np.random.Generator,
                 pair_weights: torch.Tensor | None = None) -> None:
        self.model, self.xv, self.xt, self.y, self.split, self.config, self.rng = model, xv, xt, y, split, config, rng
        self.pair_weights = pair_weights                                              # (N,) or None
        self.optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.bank = None
        if config.use_membank and split.unlab_pool.size > 0 and split.lab_train.size > 0:
            self.bank = losses.MemoryBank(*embed(model, xv, xt), momentum=config.bank_momentum)
        self.lab_cycle = Cycler(split.lab_train, rng) if split.lab_train.size else None
        self.pool_cycle = Cycler(split.pool, rng)
        self.lab_bs = min(config.labelled_batch_size, split.lab_train.size)
        self.pool_bs = min(config.batch_size, split.pool.size)
        self.steps = min(max(math.ceil(split.pool.size / config.batch_size),
                             math.ceil(split.lab_train.size / config.labelled_batch_size), config.min_steps_per_epoch),
                         config.max_steps_per_epoch)                                # the epoch's step budget
        is_lab = np.zeros(y.shape[0], dtype=bool)
        is_lab[split.lab_train] = True
        self.is_lab = torch.from_numpy(is_lab)                                       # (N,)

    def run(self, epoch: int) -> dict[str, float]:
        """``steps`` optimiser steps -> the epoch's record: epoch, steps, loss and each term's mean."""
        anchors = None
        if self.bank is not None and epoch > self.config.membank_warmup_epochs:
            anchors = choose_anchors(self.split.lab_train, self.split.unlab_pool, self.config.bank_anchors, self.rng)
        sums: dict[str, float] = {"loss": 0.0}
        for _ in range(self.steps):
            self._step(anchors, sums)
        return {"epoch": float(epoch), "steps": float(self.steps), **{k: v / self.steps for k, v in sums.items()}}

    def _step(self, anchors: torch.Tensor | None, sums: dict[str, float]) -> None:
        lab_b = self.lab_cycle.take(self.lab_bs) if self.lab_cycle is not None else np.empty(0, dtype=np.int64)
        idx = torch.from_numpy(np.concatenate([lab_b, self.pool_cycle.take(self.pool_bs)]))   # (nl + B,)
        out = self.model(self.xv[idx], self.xt[idx])
        nl = lab_b.size
        w = None if self.pair_weights is None else self.pair_weights[idx]                    # (nl + B,)
        terms = labelled_terms(out, nl, self.y[idx[:nl]], self.config, None if w is None else w[:nl])
        terms.update(pool_terms(self.model, out, nl, self.config, None if w is None else w[nl:]))
        if anchors is not None:
            pool_t = idx[nl:]
            unl = ~self.is_lab[pool_t]
            if unl.any():
                terms["membank"] = membank_term(out, nl, pool_t, unl, anchors, self.bank, self.y, self.is_lab,
                                                self.config)
        if not terms:       # e.g. only labelled terms switched on and no labelled pair
            return
        loss = weighted_loss(terms, self.config)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        if self.bank is not None:
            self.bank.update(idx[nl:], out.mu_image[nl:], out.mu_text[nl:],
                             out.logits_image[nl:].sigmoid(), out.logits_text[nl:].sigmoid())
        sums["loss"] += float(loss.detach())
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())


def _report(progress: Callable[[float, str], None] | None, record: dict[str, float], config: TrainConfig,
            stop: bool) -> None:
    if progress is None:
        return
    epoch = int(record["epoch"])
    val_msg = f", val mAP {record['val_avg']:.3f}" if "val_avg" in record else ""
    progress(1.0 if stop else epoch / config.epochs,
             f"epoch {epoch}/{config.epochs}: loss {record['loss']:.3f}{val_msg}" + (" (stopped)" if stop else ""))


def train_model(
    image_features: np.ndarray,
    text_features: np.ndarray,
    labels: np.ndarray,
    labelled: np.ndarray,
    config: TrainConfig = TrainConfig(),
    *,
    init_model: CrossModalModel | None = None,
    validation: np.ndarray | None = None,
    pair_weights: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> TrainResult:
    """Train (or warm-start) a ``CrossModalModel`` on N pairs.

    image_features: (N, Di) float32; text_features: (N, Dt) float32; labels: (N, C) 0/1 (rows of
    unlabelled pairs are ignored); labelled: (N,) bool. ``init_model`` is copied, never modified;
    it keeps its input standardisation (a new model fits it on all N pairs). ``progress(fraction,
    message)`` is called after every epoch. Full supervision is ``labelled`` all True.
    ``validation``: labelled rows to hold out for early stopping, fixed by the caller (one set for
    every strategy and round of a simulation, the workspace's fixed validation pairs); None draws
    ``val_fraction`` of the labelled rows per row from ``seed`` (``_split_labelled``). Held-out rows
    take no part in training, not even in the pool batch.
    ``pair_weights``: (N,) floats in [0, 1] or None (all 1): how much pair i's caption counts as a
    description of its image, i.e. its weight as a positive in the pairing terms (InfoNCE, PCME match,
    DAGNN's own pair) and in the text branch's classification; 0 leaves a confirmed mismatch out of
    them, P(clean) down-weights a suspected one (soft correspondence, NCR, Huang et al. NeurIPS 2021).
    The pair's labels describe its image and keep training the image branch.
    """
    _validate_inputs(image_features, text_features, labels, labelled, init_model, validation)
    weights = None if pair_weights is None else _pair_weights(pair_weights, labels.shape[0])
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    split = _make_split(labelled, config, validation)
    model = _initial_model(image_features, text_features, labels.shape[1], config, init_model)
    xv, xt, y = _tensor(image_features), _tensor(text_features), _tensor(labels)    # (N, Di), (N, Dt), (N, C)
    trainer = _Epochs(model, xv, xt, y, split, config, rng, weights)
    planned = min(config.epochs, math.ceil(config.max_steps / trainer.steps))   # epochs the schedule allows
    stopper = None
    if split.val.size:   # min_epochs capped by the schedule, so a step budget that ends first still selects
        stopper = EarlyStopping(xv[split.val], xt[split.val], labels[split.val].astype(np.float32),
                                patience=config.patience, min_epochs=min(config.min_epochs, planned))
    swa = config.averaging == "swa"
    swa_from = math.floor(planned * config.swa_start) + 1                       # first averaged epoch
    averaged = None
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        t_epoch = time.perf_counter()
        record = trainer.run(epoch)
        out_of_patience = False
        if swa and epoch >= swa_from:
            if averaged is None:
                averaged = AveragedModel(model)
            averaged.update_parameters(model)
        elif not swa and stopper is not None:
            out_of_patience = stopper.on_epoch_end(epoch, model, record)
        record["seconds"] = time.perf_counter() - t_epoch
        history.append(record)
        logger.debug("epoch %d: %s", epoch, record)
        stop = epoch * trainer.steps >= config.max_steps or out_of_patience
        _report(progress, record, config, stop)
        if stop:
            break
    if swa:
        if averaged is not None:
            model.load_state_dict(averaged.module.state_dict())
        best_epoch = len(history)
        best_metrics = stopper.evaluate(model) if stopper is not None else {}
    else:
        if stopper is not None:
            stopper.on_train_end(model)
        best_epoch = stopper.best_epoch if stopper is not None and stopper.best_epoch else len(history)
        best_metrics = stopper.best_metrics if stopper is not None else {}
    model.eval()
    seconds = time.perf_counter() - start
    logger.info("trained %d epochs (best %d) on %d labelled + %d unlabelled pairs in %.1f s",
                len(history), best_epoch, split.lab_train.size, split.unlab_pool.size, seconds)
    return TrainResult(model, tuple(history), best_epoch, best_metrics, int(split.lab_train.size),
                       int(split.val.size), seconds, tuple(split.val.tolist()))
