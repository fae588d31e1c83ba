"""Early stopping of ``train_model`` as an epoch-end callback (minGPT's trainer callbacks).

The score is the average of image-to-text and text-to-image mAP@all (``evaluate_retrieval``'s
``avg``) of the eval-mode means on a validation split carved from the labelled pairs.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

from learner.metrics import evaluate_retrieval
from learner.model import CrossModalModel
from learner.train_steps import embed


class EarlyStopping:
    """Keeps the best model by validation avg mAP and says when patience has run out.

    image, text: (V, Di), (V, Dt) float32 features of the validation pairs; labels: (V, C) 0/1.
    patience, min_epochs: as in ``TrainConfig``. From epoch ``min_epochs`` on, an epoch whose score
    beats the best so far (strictly) becomes the best and its state dict is copied; any other epoch
    is stale. ``on_epoch_end`` returns True once ``patience`` epochs in a row were stale;
    ``on_train_end`` loads the best state into the model (unchanged when no epoch qualified).

    best_epoch: 1-based, 0 while no epoch qualified; best_metrics: ``evaluate_retrieval`` keys at
    best_epoch (empty while none); best_state: the state dict at best_epoch (None while none).
    """

    def __init__(self, image: torch.Tensor, text: torch.Tensor, labels: np.ndarray, *,
                 patience: int, min_epochs: int) -> None:
        self.image, self.text, self.labels = image, text, labels
        self.patience, self.min_epochs = patience, min_epochs
        self.best_score, self.best_epoch, self.stale = -math.inf, 0, 0
        self.best_metrics: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None

    def evaluate(self, model: CrossModalModel) -> dict[str, float]:
        """``evaluate_retrieval`` (mAP@all only) of the model's eval-mode means on the validation pairs."""
        mu_v, mu_t, _, _ = embed(model, self.image, self.text)                    # (V, d), (V, d)
        return evaluate_retrieval(mu_v.numpy(), mu_t.numpy(), self.labels, ks=(), precision_ks=())

    def on_epoch_end(self, epoch: int, model: CrossModalModel, record: dict[str, float]) -> bool:
        """Score the model after ``epoch`` (1-based), add ``val_avg`` to the epoch's record; True: stop."""
        metrics = self.evaluate(model)
        record["val_avg"] = metrics["avg"]
        if epoch >= self.min_epochs and metrics["avg"] > self.best_score:
            self.best_score, self.best_epoch, self.best_metrics, self.stale = metrics["avg"], epoch, metrics, 0
            self.best_state = copy.deepcopy(model.state_dict())
        elif epoch >= self.min_epochs:
            self.stale += 1
        return self.stale >= self.patience

    def on_train_end(self, model: CrossModalModel) -> None:
        """Restore the best epoch's weights."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
