"""The interface every training objective implements.

An objective returns a differentiable loss whose expectation is the negative full-data objective
(minibatch terms scaled by N/M), so one optimizer step is an SGVB step (AEVB Sec. 2.3).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import pyro
import torch

from pyro_vae.model import VAE


class Objective:
    """``loss(vae, x, idx, num_data)``: a scalar whose gradient trains every parameter.

    Objectives that take several optimizer steps per minibatch (MCEM's M-step) override
    ``step_losses``; objectives with state that must survive a resume (MCEM's persistent chains)
    override ``state_dict``/``load_state_dict``; objectives that cannot use some registry entry
    say so in ``check``.
    """

    name: str = "objective"
    loss_is_elbo: bool = False  # True when -loss/N is itself an ELBO estimate (then logged as one)
    supports_distributed: bool = True  # False for objectives with per-datapoint state
    needs_param_store: bool = False  # True if parameters must appear as Pyro param sites (JIT)
    trains_guide: bool = True  # False where q(z|x) is left as initialised (MCEM): estimators drawing from it are loose
    # True where every step launches the same kernels (one optimizer step per minibatch, no
    # per-datapoint state), so that training.cuda_graphs may replay it (training/cuda_graphs.py)
    capturable: bool = False

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        raise NotImplementedError

    def step_losses(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> Iterator[torch.Tensor]:
        """The losses of the optimizer steps taken on this minibatch (computed lazily, in order)."""
        yield self.loss(vae, x, idx, num_data)

    def check(self, vae: VAE) -> None:
        """Raise a ConfigError if this objective cannot train ``vae``."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


def clear_pyro_state() -> None:
    """Start from an empty param store: ``pyro.module`` would otherwise hand a new model the
    parameters a previous model left under the same name."""
    pyro.clear_param_store()
