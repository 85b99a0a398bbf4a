"""The estimators' settings, declared once: defaults, bounds, and the memory a chunk may take."""

import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.estimators.iwae import plan_chunks
from pyro_vae.estimators.options import CPU_MEMORY_GB, DEFAULTS, estimator_options, memory_budget


def test_a_chunk_on_a_gpu_takes_half_its_free_memory_unless_told(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * 2**30, 139 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert memory_budget(None, gpu) == 50 * 2**30 and memory_budget(None, cpu) == int(CPU_MEMORY_GB * 2**30)
    assert memory_budget(3.0, gpu) == 3 * 2**30  # a cap the user gave stands
    # the paper's model (6.4 kB a particle): IWAE-5000 over all 10k test points in one chunk of the card
    assert plan_chunks(5000, 10000, 6400, None, device=gpu) == (5000, 1677)
    assert plan_chunks(5000, 10000, 6400, None, device=cpu)[1] == 67


def test_memory_torch_holds_unused_on_the_gpu_counts_as_free(monkeypatch):
    """After earlier work the caching allocator keeps freed blocks (reserved, not allocated): the
    driver counts them as taken, but this process may use them, so the chunks stay as large."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (60 * gib, 139 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 45 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 5 * gib)
    assert memory_budget(None, torch.device("cuda", 0)) == 50 * gib


def test_settings_are_checked_with_one_line_errors():
    assert DEFAULTS.k == 5000 and DEFAULTS.memory_gb is None and estimator_options(k=3).k == 3
    for settings, message in [({"k": True}, "k must be a whole number >= 1 and <= 10000000, not True"), ({"k": 10**8}, "k must be a whole number >= 1 and <= 10000000"),
                              ({"memory_gb": -1.0}, "memory_gb must be a finite number > 0, or unset"),
                              ({"kk": 1}, "unknown estimator setting")]:
        with pytest.raises(ConfigError, match=message):
            estimator_options(**settings)
