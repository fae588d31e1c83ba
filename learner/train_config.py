"""Settings of ``learner.training.train_model`` (DESIGN §4), torch-free so that configuration
code (workspace files, CLI, simulation) can build and check them without importing torch."""
from __future__ import annotations

from dataclasses import dataclass

AVERAGING = ("none", "swa")
CORRESPONDENCE_WEIGHTING = ("off", "audit", "audit+model")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``train_model``. Defaults were chosen on a validation split of the Wikipedia
    train split (docs/learner.md).

    Model:       dim (common space, 256), hidden (MLP width, 512), dropout (0.2, also drives MC dropout).
    Optimiser:   lr (3e-4), weight_decay (1e-4, AdamW), epochs (max, 40), max_steps (optimiser steps
                 after which training ends with the current epoch, 600: bounds the time on large
                 pools; Wikipedia-sized pools stop earlier), batch_size (pool batch, 512),
                 labelled_batch_size (128), min_steps_per_epoch (10: small labelled sets still get
                 enough updates), max_steps_per_epoch (200: the step budget of one epoch; an epoch is
                 ceil(pool / batch_size) steps of pool batches drawn from a cycling permutation, so
                 pools above 200 x 512 = 102,400 pairs see a fresh sample of the pool each epoch and
                 the per-epoch cost of the pairing loss stays bounded; smaller pools are unchanged), patience (epochs without validation gain before stopping, 6),
                 min_epochs (epochs trained before a model may be selected, 5: tiny validation
                 splits otherwise often pick an undertrained first epoch; capped by the epochs that
                 ``max_steps`` allows, so on pools past ~77k pairs, where 600 steps are 4 epochs or
                 fewer (3 from 102,400), the last one may still be selected and its validation
                 figures are recorded),
                 val_fraction (of the labelled pairs held out for early stopping, 0.2), seed (0).
    Averaging:   averaging ("none": the best epoch by early stopping; "swa": stochastic weight
                 averaging, Izmailov et al. UAI 2018: a fixed schedule of ``epochs`` (or the epochs
                 that ``max_steps`` allows) without early stopping, the weights averaged with equal
                 weight over the epochs from ``swa_start`` (a fraction of that schedule) on; the
                 validation pairs are then only scored, never used to choose).
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
    Rounds:      warm_start (False) is read by callers that hold a previous model (workspace
                 training, simulation): start each new version from the previous model's weights
                 instead of from scratch; ``train_model`` itself takes that model as ``init_model``.
                 Off by default because warm-started rounds lost mAP as labels arrived
                 (docs/benchmarks.md).
    Correspondence: correspondence_weighting ("off" | "audit" | "audit+model") is read by workspace
                 training: pairs whose current verdict is "mismatch" always get pair weight 0
                 (``train_model``'s ``pair_weights``); with "audit" the others that the latest audit
                 scored get P(clean) of the raw-feature inconsistency (``learner.audit.clean_probability``;
                 a "match" verdict keeps 1); "audit+model" multiplies in P(clean) of the model's mismatch
                 (``learner.audit.pair_clean_probability``). Default "audit+model", chosen with
                 ``benchmarks/bench_audit.py --mode train`` on the fashion validation carve, 20 % swapped,
                 one seed: +0.0248 avg mAP over no weighting, +0.0034 over "audit"; 0 on the clean pool,
                 where the audit values form one population and nothing is down-weighted (docs/audit.md).
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
    max_steps_per_epoch: int = 200
    patience: int = 6
    min_epochs: int = 5
    val_fraction: float = 0.2
    seed: int = 0
    averaging: str = "none"
    swa_start: float = 0.5
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
    warm_start: bool = False
    correspondence_weighting: str = "audit+model"

    def __post_init__(self) -> None:
        positive = ("dim", "hidden", "epochs", "max_steps", "batch_size", "labelled_batch_size", "min_steps_per_epoch",
                    "max_steps_per_epoch",
                    "patience", "min_epochs", "knn_k", "bank_anchors", "match_samples",
                    "match_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("lr", "temperature", "bank_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name}: expected > 0, got {getattr(self, name)}")
        if self.correspondence_weighting not in CORRESPONDENCE_WEIGHTING:
            raise ValueError(f"TrainConfig.correspondence_weighting: expected one of "
                             f"{', '.join(CORRESPONDENCE_WEIGHTING)}, got {self.correspondence_weighting!r}")
        if self.averaging not in AVERAGING:
            raise ValueError(f"TrainConfig.averaging: expected one of {', '.join(AVERAGING)}, got {self.averaging!r}")
        for name in ("dropout", "val_fraction", "bank_momentum", "swa_start"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name}: expected in [0, 1), got {getattr(self, name)}")
        terms = ("classification", "dagnn", "infonce", "membank", "kl", "match")
        if not any(getattr(self, f"use_{t}") for t in terms):
            raise ValueError(f"TrainConfig: at least one of {', '.join('use_' + t for t in terms)} must be True")
        if not 0.5 <= self.pseudo_threshold <= 1.0:
            raise ValueError(f"TrainConfig.pseudo_threshold: expected in [0.5, 1], got {self.pseudo_threshold}")
        if self.max_steps_per_epoch < self.min_steps_per_epoch:
            raise ValueError(f"TrainConfig.max_steps_per_epoch: expected >= min_steps_per_epoch "
                             f"({self.min_steps_per_epoch}), got {self.max_steps_per_epoch}")
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"TrainConfig.warm_start: expected True or False, got {self.warm_start!r}")
