"""Early stopping and the training configuration (learner.early_stopping, learner.train_config, learner.training)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import learner
import learner.training as training
from learner.early_stopping import EarlyStopping
from learner.model import CrossModalModel
from learner.train_config import TrainConfig
from learner.training import train_model

DI, DT, C, N = 12, 7, 4, 80
pytestmark = pytest.mark.usefixtures("one_thread")


def _noisy_multilabel(seed=1, noise=1.0):
    """N pairs around class centres, one class each plus extra classes at 15 %: (xv, xt, y)."""
    rng = np.random.default_rng(seed)
    y = np.eye(C, dtype=np.float32)[rng.integers(0, C, N)]
    y = np.maximum(y, (rng.random((N, C)) < 0.15).astype(np.float32))
    centres_v, centres_t = rng.normal(size=(C, DI)), rng.normal(size=(C, DT))
    xv = (y @ centres_v + noise * rng.normal(size=(N, DI))).astype(np.float32)
    xt = (y @ centres_t + noise * rng.normal(size=(N, DT))).astype(np.float32)
    return xv, xt, y


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_returns_the_best_epochs_weights_not_the_last(monkeypatch):
    """A large learning rate makes validation mAP peak and fall before patience stops the run."""
    states, stoppers = {}, []

    class Recording(EarlyStopping):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stoppers.append(self)

        def on_epoch_end(self, epoch, model, record):
            stop = super().on_epoch_end(epoch, model, record)
            states[epoch] = _state(model)
            return stop

    monkeypatch.setattr(training, "EarlyStopping", Recording)
    xv, xt, y = _noisy_multilabel()
    labelled = np.zeros(N, dtype=bool)
    labelled[:30] = True
    cfg = TrainConfig(dim=16, hidden=32, batch_size=32, labelled_batch_size=16, min_steps_per_epoch=2, epochs=20,
                      patience=2, min_epochs=2, lr=1e-2, val_fraction=0.4)
    res = train_model(xv, xt, y, labelled, cfg)
    last = len(res.history)
    val = [record["val_avg"] for record in res.history]
    assert res.best_epoch < last < cfg.epochs                                      # stopped by patience
    assert val[res.best_epoch - 1] == max(val[cfg.min_epochs - 1:]) > val[-1]      # the peak came before the end
    assert res.best_metrics["avg"] == val[res.best_epoch - 1]
    assert stoppers[0].evaluate(res.model)["avg"] == pytest.approx(res.best_metrics["avg"], abs=1e-12)
    assert _same_state(_state(res.model), states[res.best_epoch])
    assert not _same_state(_state(res.model), states[last])


def _scripted(scores, *, patience, min_epochs):
    """An EarlyStopping whose validation scores are ``scores``, one per epoch in order."""
    stopper = EarlyStopping(torch.zeros(2, DI), torch.zeros(2, DT), np.zeros((2, C), np.float32),
                            patience=patience, min_epochs=min_epochs)
    it = iter(scores)
    stopper.evaluate = lambda model: {"avg": next(it)}
    return stopper


def test_early_stopping_keeps_the_best_after_min_epochs_and_counts_patience():
    torch.manual_seed(0)
    model = CrossModalModel(DI, DT, C, dim=4, hidden=8)
    stopper = _scripted([0.9, 0.5, 0.7, 0.6, 0.7, 0.65], patience=3, min_epochs=2)
    stops = []
    for epoch in range(1, 7):
        with torch.no_grad():
            model.match_b.fill_(float(epoch))                       # the weights say which epoch they are from
        record = {}
        stops.append(stopper.on_epoch_end(epoch, model, record))
        assert "val_avg" in record
    assert stops == [False, False, False, False, False, True]       # 0.9 at epoch 1 is before min_epochs
    assert stopper.best_epoch == 3 and stopper.best_metrics == {"avg": 0.7}         # a tie (epoch 5) is not a gain
    stopper.on_train_end(model)
    assert float(model.match_b.detach()) == 3.0


def test_early_stopping_leaves_the_model_when_no_epoch_qualified():
    model = CrossModalModel(DI, DT, C, dim=4, hidden=8)
    stopper = _scripted([0.4], patience=1, min_epochs=5)
    assert stopper.on_epoch_end(1, model, {}) is False
    before = _state(model)
    stopper.on_train_end(model)
    assert stopper.best_epoch == 0 and stopper.best_state is None and _same_state(_state(model), before)


def test_train_config_is_re_exported_torch_free_and_warm_start_defaults_off():
    assert training.TrainConfig is TrainConfig
    assert TrainConfig().warm_start is False and TrainConfig(warm_start=True).warm_start is True
    with pytest.raises(ValueError, match="TrainConfig.warm_start: expected True or False, got 'yes'"):
        TrainConfig(warm_start="yes")
    code = "import sys, learner.train_config; sys.exit('torch' in sys.modules)"
    root = Path(learner.__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


def test_given_validation_rows_are_held_out_and_never_trained_on(monkeypatch):
    """train_model(validation=rows): exactly those rows are scored by early stopping, and neither the
    labelled batch nor the pool batch ever draws them."""
    drawn = []
    real_take = training.Cycler.take
    monkeypatch.setattr(training.Cycler, "take", lambda self, n: (drawn.append(r := real_take(self, n)), r)[1])
    xv, xt, y = _noisy_multilabel()
    labelled = np.zeros(N, dtype=bool)
    labelled[:30] = True
    rows = np.array([3, 11, 17, 25])
    cfg = TrainConfig(dim=16, hidden=32, batch_size=32, labelled_batch_size=16, min_steps_per_epoch=2, epochs=3,
                      min_epochs=1)
    res = train_model(xv, xt, y, labelled, cfg, validation=rows)
    assert res.val_rows == tuple(rows.tolist()) and (res.n_train, res.n_val) == (26, 4)
    assert not set(np.concatenate(drawn).tolist()) & set(rows.tolist())
    assert res.best_metrics  # early stopping ran on them
    with pytest.raises(ValueError, match="labelled row"):
        train_model(xv, xt, y, labelled, cfg, validation=np.array([3, 40]))


def test_swa_runs_a_fixed_schedule_and_returns_the_average_of_the_late_epochs(monkeypatch):
    """averaging="swa": no early stopping (all epochs run), and the model is the mean of the weights
    after the epochs from swa_start on."""
    states = []
    real_run = training._Epochs.run

    def run(self, epoch):
        record = real_run(self, epoch)
        states.append(_state(self.model))
        return record

    monkeypatch.setattr(training._Epochs, "run", run)
    xv, xt, y = _noisy_multilabel()
    labelled = np.zeros(N, dtype=bool)
    labelled[:30] = True
    cfg = TrainConfig(dim=16, hidden=32, batch_size=32, labelled_batch_size=16, min_steps_per_epoch=2, epochs=6,
                      patience=1, min_epochs=1, lr=1e-2, averaging="swa", swa_start=0.5)
    res = train_model(xv, xt, y, labelled, cfg)
    assert len(res.history) == 6 and res.best_epoch == 6 and res.best_metrics
    final = _state(res.model)
    for name, value in final.items():
        if value.is_floating_point() and name.endswith(("weight", "bias")):
            expected = torch.stack([s[name] for s in states[3:]]).mean(dim=0)      # epochs 4, 5, 6
            torch.testing.assert_close(value, expected)
    with pytest.raises(ValueError, match="averaging"):
        TrainConfig(averaging="ema")


def test_an_epoch_takes_at_most_its_step_budget_of_pool_batches():
    """N = 80 pairs in pool batches of 8 would be 10 steps an epoch; the budget of 3 bounds it, and
    successive epochs keep drawing new pool batches (the per-epoch cost does not grow with the pool)."""
    xv, xt, y = _noisy_multilabel()
    labelled = np.zeros(N, dtype=bool)
    labelled[:20] = True
    cfg = TrainConfig(dim=8, hidden=16, batch_size=8, labelled_batch_size=4, min_steps_per_epoch=1,
                      max_steps_per_epoch=3, epochs=2, min_epochs=1, val_fraction=0.0)
    res = train_model(xv, xt, y, labelled, cfg)
    assert [record["steps"] for record in res.history] == [3.0, 3.0]
    unbounded = train_model(xv, xt, y, labelled, TrainConfig(**{**cfg.__dict__, "max_steps_per_epoch": 100}))
    assert [record["steps"] for record in unbounded.history] == [10.0, 10.0]
    with pytest.raises(ValueError, match="max_steps_per_epoch"):
        TrainConfig(min_steps_per_epoch=20, max_steps_per_epoch=10)


def test_a_step_budget_that_ends_before_min_epochs_still_selects_and_reports_on_validation():
    """Large pools: 600 steps of 200 a epoch end training after 3 epochs, before min_epochs = 5. The last
    planned epoch may still be selected, so the version records its validation figures."""
    xv, xt, y = _noisy_multilabel()
    labelled = np.zeros(N, dtype=bool)
    labelled[:40] = True
    cfg = TrainConfig(dim=8, hidden=16, batch_size=8, labelled_batch_size=4, min_steps_per_epoch=1,
                      max_steps_per_epoch=3, max_steps=6, epochs=40, min_epochs=5, val_fraction=0.25)
    res = train_model(xv, xt, y, labelled, cfg)
    assert len(res.history) == 2 and res.best_epoch == 2
    assert res.best_metrics and np.isfinite(res.best_metrics["avg"])


def test_pair_weights_zero_keep_a_swapped_caption_from_being_learned_as_its_images_match():
    """Swap the captions of 10 pairs of different classes. Trained with them at weight 0, the model
    does not pull those images towards their wrong captions: their mu_v . mu_t stays lower than when
    the same pairs train at weight 1 (which memorises the wrong pairing). Bad weights are refused."""
    xv, xt, y = _noisy_multilabel(noise=0.3)
    first = np.flatnonzero(y[:, 0] == 1)[:5]
    second = np.flatnonzero((y[:, 1] == 1) & (y[:, 0] == 0))[:5]
    text_row = np.arange(N)
    text_row[first], text_row[second] = second, first
    swapped = np.concatenate([first, second])
    xt = xt[text_row]
    labelled = np.zeros(N, dtype=bool)
    labelled[::4] = True
    cfg = TrainConfig(dim=16, hidden=32, batch_size=32, labelled_batch_size=16, min_steps_per_epoch=10, epochs=8,
                      min_epochs=8, val_fraction=0.0, lr=3e-3)
    weights = np.ones(N, dtype=np.float32)
    weights[swapped] = 0.0

    def swapped_similarity(pair_weights):
        model = train_model(xv, xt, y, labelled, cfg, pair_weights=pair_weights).model
        with torch.no_grad():
            out = model(torch.from_numpy(xv[swapped]), torch.from_numpy(xt[swapped]))
        return float((out.mu_image * out.mu_text).sum(1).mean())

    assert swapped_similarity(weights) < swapped_similarity(np.ones(N, dtype=np.float32)) - 0.1
    for bad in (np.ones(N - 1), np.full(N, 1.5), np.full(N, np.nan)):
        with pytest.raises(ValueError, match="pair_weights"):
            train_model(xv, xt, y, labelled, cfg, pair_weights=bad)
