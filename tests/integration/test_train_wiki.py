"""Train on the real Wikipedia benchmark (Rasiwasia et al. 2010) and check test mAP beats random weights."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.inference import infer
from learner.metrics import evaluate_retrieval
from learner.model import CrossModalModel
from learner.training import TrainConfig, train_model

WIKI = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "wiki-features"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wiki():
    if not (WIKI / "raw_features.mat").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{WIKI} is missing; CI must provide ../shared/datasets/wiki-features")
        pytest.skip(f"{WIKI} is absent (the shared datasets folder next to the repository)")
    from storage.wiki import read_wiki

    return read_wiki(WIKI)


def _test_map(model, ds):
    test = ds.split_mask("test")
    out = infer(model, ds.image_features[test], ds.text_features[test], mc_samples=0)
    return evaluate_retrieval(out.mu_image, out.mu_text, ds.label_matrix()[test])


@pytest.fixture
def one_thread():
    """A small model on a shared 2-core machine trains faster on one thread; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_full_supervision_far_above_random_weights(wiki, one_thread):
    train = wiki.split_mask("train")
    x_v, x_t, y = wiki.image_features[train], wiki.text_features[train], wiki.label_matrix()[train]
    torch.manual_seed(0)
    random_model = CrossModalModel(x_v.shape[1], x_t.shape[1], y.shape[1])
    random_model.set_standardisation(x_v, x_t)
    random_map = _test_map(random_model, wiki)["avg"]
    result = train_model(x_v, x_t, y, np.ones(train.sum(), dtype=bool), TrainConfig(seed=0, epochs=8))
    trained = _test_map(result.model, wiki)
    # measured (seed 0, this config): random weights avg 0.141 (seeds 0-2: 0.135-0.141); trained avg 0.254,
    # i2t 0.277, t2i 0.231 (best epoch 7 of 8, 12 s on one thread; docs/learner.md)
    assert random_map < 0.16
    assert trained["avg"] > 0.22 and trained["i2t"] > 0.2 and trained["t2i"] > 0.18
    assert result.n_val > 0 and result.best_metrics["avg"] > random_map
