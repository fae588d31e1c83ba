"""Model forward pass, atomic checkpoints, inference and a tiny training run (learner.model/checkpoint/inference/training)."""
import numpy as np
import pytest
import torch

import learner.checkpoint as checkpoint
from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.inference import infer
from learner.model import CrossModalModel
from learner.training import TrainConfig, train_model

DI, DT, C, N = 12, 7, 4, 60
pytestmark = pytest.mark.usefixtures("one_thread")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, C, N)
    centres_v, centres_t = rng.normal(size=(C, DI)), rng.normal(size=(C, DT))
    xv = (centres_v[cls] + 0.3 * rng.normal(size=(N, DI))).astype(np.float32)
    xt = (centres_t[cls] + 0.3 * rng.normal(size=(N, DT))).astype(np.float32)
    return xv, xt, np.eye(C, dtype=np.float32)[cls]


def _model():
    torch.manual_seed(0)
    return CrossModalModel(DI, DT, C, dim=16, hidden=32).eval()


def test_forward_shapes_unit_norm_and_positive_variance():
    out = _model()(torch.randn(5, DI), torch.randn(5, DT))
    assert out.mu_image.shape == out.mu_text.shape == out.logvar_image.shape == (5, 16)
    assert out.logits_image.shape == out.logits_text.shape == (5, C)
    assert torch.allclose(out.mu_image.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(out.mu_text.norm(dim=1), torch.ones(5), atol=1e-5)
    assert (out.logvar_image.exp() > 0).all() and float(_model().match_a.detach()) > 0


def test_model_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="dropout"):
        CrossModalModel(DI, DT, C, dropout=1.0)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = _model()
    xv, xt, _ = _data()
    model.set_standardisation(xv, xt)
    path = save_checkpoint(model, tmp_path / "model.pt", {"round": 3, "labels": ["a", "b"]})
    loaded, meta = load_checkpoint(path)
    assert meta == {"round": 3, "labels": ["a", "b"]}
    a, b = infer(model, xv, xt, mc_samples=3), infer(loaded, xv, xt, mc_samples=3)
    for field in ("mu_image", "mu_text", "var_image", "probs_text", "mc_probs_image"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.match_a == b.match_a and a.match_b == b.match_b


def test_crash_during_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(_model(), path, {"version": 1})
    before = path.read_bytes()

    def crashing_save(obj, fh):
        fh.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_model(), path, {"version": 2})
    assert path.read_bytes() == before
    assert load_checkpoint(path)[1] == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]      # temp file cleaned up


def test_save_rejects_non_json_metadata(tmp_path):
    with pytest.raises(ValueError, match="metadata"):
        save_checkpoint(_model(), tmp_path / "m.pt", {"bad": object()})


def test_infer_shapes_and_determinism():
    xv, xt, _ = _data()
    model = _model()
    state = torch.get_rng_state()
    out = infer(model, xv, xt, mc_samples=4, dropout_samples=3, batch_size=16, seed=7)
    assert torch.equal(state, torch.get_rng_state())                # global RNG untouched
    assert out.mu_image.shape == (N, 16) and out.var_text.shape == (N, 16) and out.probs_image.shape == (N, C)
    assert out.mc_probs_image.shape == out.mc_probs_text.shape == (N, 4, C)
    assert out.dropout_probs.shape == (N, 3, C) and out.mu_image.dtype == np.float32
    assert (out.var_image > 0).all()
    again = infer(model, xv, xt, mc_samples=4, dropout_samples=3, batch_size=16, seed=7)
    np.testing.assert_array_equal(out.mc_probs_text, again.mc_probs_text)
    np.testing.assert_array_equal(out.dropout_probs, again.dropout_probs)
    assert not np.allclose(out.dropout_probs[:, 0], out.dropout_probs[:, 1])   # dropout really on
    none = infer(model, xv, xt, mc_samples=0)
    assert none.mc_probs_image.shape == (N, 0, C) and none.dropout_probs is None
    assert not model.training


def test_infer_validates_shapes():
    xv, xt, _ = _data()
    with pytest.raises(ValueError, match="text_features"):
        infer(_model(), xv, xt[:, :3])


def test_train_model_small_run_warm_start_and_progress():
    xv, xt, y = _data()
    labelled = np.zeros(N, dtype=bool)
    labelled[:20] = True
    calls = []
    cfg = TrainConfig(dim=16, hidden=32, epochs=6, batch_size=32, labelled_batch_size=16, min_steps_per_epoch=2,
                      patience=3, min_epochs=1)
    res = train_model(xv, xt, y, labelled, cfg, progress=lambda f, m: calls.append((f, m)))
    assert res.n_val >= 2 and res.n_val + res.n_train == 20 and 1 <= res.best_epoch <= len(res.history) <= 6
    assert len(calls) == len(res.history) and all(0 < f <= 1 for f, _ in calls)
    assert {"classification", "dagnn", "infonce", "match", "kl", "val_avg"} <= set(res.history[-1])
    again = train_model(xv, xt, y, labelled, cfg)
    for p, q in zip(res.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)                                     # deterministic
    init_state = {k: v.clone() for k, v in res.model.state_dict().items()}
    warm = train_model(xv, xt, y, labelled, cfg, init_model=res.model)
    assert all(torch.equal(v, res.model.state_dict()[k]) for k, v in init_state.items())   # init not modified
    assert warm.model is not res.model


def test_train_model_validates_inputs():
    xv, xt, y = _data()
    with pytest.raises(ValueError, match="labelled"):
        train_model(xv, xt, y, np.ones(N, dtype=int), TrainConfig())
    with pytest.raises(ValueError, match="text_features"):
        train_model(xv, xt[:10], y, np.ones(N, dtype=bool), TrainConfig())
    with pytest.raises(ValueError, match="init_model"):
        train_model(xv, xt, y, np.ones(N, dtype=bool), TrainConfig(), init_model=CrossModalModel(DI + 1, DT, C))
    with pytest.raises(ValueError, match="TrainConfig.epochs"):
        TrainConfig(epochs=0)


def test_membank_and_sede_paths_train_and_report_their_terms():
    xv, xt, y = _data(1)
    labelled = np.zeros(N, dtype=bool)
    labelled[:20] = True
    cfg = TrainConfig(dim=16, hidden=32, epochs=2, batch_size=32, labelled_batch_size=16, min_steps_per_epoch=2,
                      min_epochs=1, use_membank=True, membank_warmup_epochs=0, bank_anchors=30, hard_negative_beta=2.0)
    res = train_model(xv, xt, y, labelled, cfg)
    assert "membank" in res.history[-1] and np.isfinite(res.history[-1]["loss"])


def test_supervised_only_uses_labelled_pairs_and_no_validation_when_too_few():
    xv, xt, y = _data(2)
    labelled = np.zeros(N, dtype=bool)
    labelled[:6] = True                      # floor(0.2 * 6) = 1 < 2: no validation split
    res = train_model(xv, xt, y, labelled, TrainConfig(dim=16, hidden=32, epochs=2, min_steps_per_epoch=2,
                                                       use_unlabelled=False))
    assert res.n_val == 0 and res.n_train == 6 and res.best_epoch == 2 and res.best_metrics == {}


def test_validation_split_never_takes_a_pair_that_trained_before():
    """Labels arrive between rounds; a warm-started model must not be validated on pairs it trained on."""
    from learner.training import _split_labelled

    rng = np.random.default_rng(0)
    labelled = np.zeros(500, dtype=bool)
    labelled[rng.choice(500, 40, replace=False)] = True
    train_before, val_before = _split_labelled(labelled, 0.2, seed=3)
    labelled[rng.choice(np.flatnonzero(~labelled), 100, replace=False)] = True
    train_after, val_after = _split_labelled(labelled, 0.2, seed=3)
    assert len(val_before) >= 2 and len(val_after) > len(val_before)
    assert set(val_before) <= set(val_after)           # validation pairs stay validation pairs
    assert not set(train_before) & set(val_after)      # no trained pair becomes a validation pair
    assert 0.1 < len(val_after) / labelled.sum() < 0.3
