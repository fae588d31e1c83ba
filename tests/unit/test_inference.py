"""InferenceConfig and the defaults of infer (learner.inference)."""
import inspect

import numpy as np
import pytest
import torch

from learner.inference import InferenceConfig, infer
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
