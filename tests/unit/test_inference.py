"""InferenceConfig and the defaults of infer (learner.inference)."""
import inspect

import numpy as np
import pytest
import torch

from learner.inference import InferenceConfig, infer, infer_batch, iter_infer
from learner.model import CrossModalModel


def test_inference_config_defaults_and_infer_takes_its_defaults_from_it():
    cfg = InferenceConfig()
    assert (cfg.mc_samples, cfg.dropout_samples, cfg.batch_size) == (8, 10, 1024)
    params = inspect.signature(infer).parameters
    assert params["mc_samples"].default == cfg.mc_samples and params["batch_size"].default == cfg.batch_size
    assert params["dropout_samples"].default == 0                       # MC dropout only when BALD asks for it


@pytest.mark.parametrize(("field", "value", "message"), [
    ("mc_samples", -1, "InferenceConfig.mc_samples: expected >= 0, got -1"),
    ("dropout_samples", -2, "InferenceConfig.dropout_samples: expected >= 0, got -2"),
    ("batch_size", 0, "InferenceConfig.batch_size: expected >= 1, got 0"),
])
def test_inference_config_names_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        InferenceConfig(**{field: value})
    torch.manual_seed(0)
    model = CrossModalModel(3, 2, 2, dim=4, hidden=8)
    with pytest.raises(ValueError, match=message):
        infer(model, np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32), **{field: value})


def _model_and_rows(n=70):
    torch.manual_seed(0)
    model = CrossModalModel(6, 5, 3, dim=4, hidden=8)
    rng = np.random.default_rng(1)
    return model, rng.normal(size=(n, 6)).astype(np.float32), rng.normal(size=(n, 5)).astype(np.float32)


def test_batches_on_threads_equal_the_serial_batches_and_each_batch_computed_alone():
    """``iter_infer(workers=2)`` and one ``infer_batch`` per batch (as a Ray actor runs it) give the serial
    outputs bit for bit: every batch samples from its own seeded generator."""
    model, xv, xt = _model_and_rows()
    serial = list(iter_infer(model, xv, xt, mc_samples=3, batch_size=16, seed=5))
    threaded = list(iter_infer(model, xv, xt, mc_samples=3, batch_size=16, seed=5, workers=2))
    model.eval()
    alone = [infer_batch(model, xv[s:s + 16], xt[s:s + 16], mc_samples=3, seed=5, batch_index=b)
             for b, s in enumerate(range(0, 70, 16))]
    assert len(serial) == len(threaded) == len(alone) == 5
    for a, b, c in zip(serial, threaded, alone):
        for name in ("mu_image", "var_text", "probs_image", "mc_probs_image", "mc_probs_text"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
            assert np.array_equal(getattr(a, name), getattr(c, name)), name
    other = infer_batch(model, xv[:16], xt[:16], mc_samples=3, seed=5, batch_index=1)
    assert not np.array_equal(other.mc_probs_image, serial[0].mc_probs_image)          # batches draw differently
    again = list(iter_infer(model, xv, xt, mc_samples=3, batch_size=16, seed=6))
    assert not np.array_equal(again[0].mc_probs_image, serial[0].mc_probs_image)     # and seeds do too


def test_threads_refuse_mc_dropout():
    model, xv, xt = _model_and_rows()
    with pytest.raises(ValueError, match="workers > 1 needs dropout_samples = 0"):
        next(iter_infer(model, xv, xt, dropout_samples=2, workers=2))
    with pytest.raises(ValueError, match="InferenceConfig.workers: expected >= 1, got 0"):
        InferenceConfig(workers=0)
