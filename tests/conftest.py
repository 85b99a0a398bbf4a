import copy
from typing import Any, Dict

import pyro
import pytest
import torch

from pyro_vae import config as C


def tiny_config_dict(**sections: Any) -> Dict[str, Any]:
    """A config for synthetic linear-Gaussian data that trains in well under a second."""
    base = {
        "name": "test",
        "seed": 0,
        "device": "cpu",
        "data": {"name": "synthetic", "n_train": 60, "n_test": 20, "x_dim": 6, "z_dim": 2},
        "model": {
            "z_dim": 2,
            "likelihood": {"name": "gaussian", "variance": "learned"},
            "encoder": {"name": "mlp", "hidden": [8]},
            "decoder": {"name": "mlp", "hidden": [8]},
        },
        "objective": {"name": "trace"},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 1, "batch_size": 20, "log_every": 1},
    }
    for key, value in sections.items():
        renamed = isinstance(value, dict) and "name" in value and value["name"] != base.get(key, {}).get("name", value["name"])
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not renamed:
            merged = copy.deepcopy(base[key])
            merged.update(value)
            base[key] = merged
        else:
            base[key] = value
    return base


def tiny_config(**sections: Any) -> C.RunConfig:
    return C.from_dict(tiny_config_dict(**sections))


@pytest.fixture(autouse=True)
def _fresh_state():
    pyro.clear_param_store()
    torch.manual_seed(0)
    yield
    pyro.clear_param_store()
