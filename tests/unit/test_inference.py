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
    outputs bit for bit: every batch samples from seeded generators of its own."""
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
    again = list(iter_infer(model, xv, xt, mc_samples=3, batch_size=16, seed=6))
    assert not np.array_equal(again[0].mc_probs_image, serial[0].mc_probs_image)     # seeds draw differently


def test_embedding_draws_are_the_calls_so_rows_do_not_depend_on_their_batch():
    """Common random numbers: the same rows get the same samples as batch 0 or 1 and at any batch size
    (up to the rounding of a differently blocked product)."""
    model, xv, xt = _model_and_rows()
    model.eval()
    first = infer_batch(model, xv[:16], xt[:16], mc_samples=3, seed=5, batch_index=0)
    other = infer_batch(model, xv[:16], xt[:16], mc_samples=3, seed=5, batch_index=1)
    assert np.array_equal(other.mc_probs_image, first.mc_probs_image)
    small, whole = infer(model, xv, xt, mc_samples=3, batch_size=16, seed=5), infer(model, xv, xt, mc_samples=3,
                                                                                  batch_size=70, seed=5)
    np.testing.assert_allclose(small.mc_probs_text, whole.mc_probs_text, rtol=1e-5, atol=1e-7)


def test_each_row_samples_its_own_gaussian_through_the_classifier():
    """The K samples of a row are classify(z_k) with z_k ~ N(mu, sigma^2) i.i.d.: with many samples the
    logits have mean classify(mu) and covariance (s W) diag(sigma^2) (s W)^T, for every row, however
    different their sigma (the draws are shared by the rows, the distribution is each row's own)."""
    model, xv, xt = _model_and_rows(n=4)
    with torch.no_grad():
        model.image_encoder.logvar_head.weight.normal_(0, 1.5)                     # rows with different sigma
        model.image_encoder.logvar_head.bias.fill_(-5.0)
    out = infer(model, xv, xt, mc_samples=20_000, seed=3)
    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode_image(torch.from_numpy(xv))
        mean, w = model.classify(mu).numpy(), (model.logit_scale * model.classifier.weight).numpy()
    logits = np.log(out.mc_probs_image) - np.log1p(-out.mc_probs_image)          # (4, K, C)
    var = np.exp(logvar.numpy())                                                   # (4, d)
    assert var.max() / var.min() > 10
    for row in range(4):
        cov = (w * var[row]) @ w.T                                                # (C, C)
        scale = np.sqrt(np.diag(cov))
        np.testing.assert_allclose(logits[row].mean(axis=0), mean[row], atol=0.05 * scale.max())
        np.testing.assert_allclose(np.cov(logits[row].T), cov, atol=0.05 * scale.max() ** 2)


def test_classify_samples_is_classify_of_the_sampled_points():
    model, _, _ = _model_and_rows()
    gen = torch.Generator().manual_seed(0)
    mu, logvar, eps = (torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen),
                       torch.randn(3, 4, generator=gen))
    with torch.no_grad():
        direct = model.classify(mu.unsqueeze(1) + (0.5 * logvar).exp().unsqueeze(1) * eps)         # (5, 3, C)
        fast = model.classify_samples(model.classify(mu), logvar, eps)
    assert fast.shape == (5, 3, 3)
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)


def test_then_runs_on_each_batch_and_its_results_come_in_row_order():
    model, xv, xt = _model_and_rows()
    plain = [b.mu_image.sum() for b in iter_infer(model, xv, xt, mc_samples=2, batch_size=16, seed=1)]
    mapped = list(iter_infer(model, xv, xt, mc_samples=2, batch_size=16, seed=1, workers=2,
                             then=lambda b: b.mu_image.sum()))
    assert len(plain) == 5 and mapped == plain


def test_threads_refuse_mc_dropout():
    model, xv, xt = _model_and_rows()
    with pytest.raises(ValueError, match="workers > 1 needs dropout_samples = 0"):
        next(iter_infer(model, xv, xt, dropout_samples=2, workers=2))
    with pytest.raises(ValueError, match="InferenceConfig.workers: expected >= 1, got 0"):
        InferenceConfig(workers=0)
