"""Monte Carlo EM as in the paper (AEVB Sec. 5, Fig. 3), registered as ``mcem``.

No encoder: one persistent latent chain per training point. E-step: one HMC trajectory (10
leapfrog steps) of the batched kernel (:mod:`pyro_vae.mcmc.hmc`) for the minibatch's chains, each
chain's step size nudged after every visit towards 90% acceptance. M-step: 5 optimizer steps on
-log p(x, z) with the acquired sample, the minibatch sum scaled by N/M as for the ELBO objectives.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import torch

from pyro_vae.components.registry import OBJECTIVES
from pyro_vae.mcmc.hmc import BatchedHMC, to_inference_data
from pyro_vae.mcmc.potentials import model_log_densities
from pyro_vae.model import VAE
from pyro_vae.objectives.base import Objective
from pyro_vae.traces import log_densities
from pyro_vae.user_numbers import count


class MonteCarloEM(Objective):
    """Monte Carlo EM over a persistent latent per training point (the module's docstring says
    how). State, saved in checkpoints: ``chains`` ``(N, D)``, the current z of each of the N
    training points, and ``log_step`` ``(N,)``, each chain's log HMC step size."""

    name = "mcem"
    supports_distributed = False  # each rank would update its own copy of the chains
    trains_guide = False

    def __init__(self, num_leapfrog: int, target_accept: float, initial_step_size: float, m_steps: int, hmc_steps: int) -> None:
        self.num_leapfrog = num_leapfrog
        self.target_accept = target_accept
        self.initial_step_size = initial_step_size
        self.m_steps = m_steps
        self.hmc_steps = hmc_steps
        self.chains: Optional[torch.Tensor] = None  # (N, D): the current latent of every datapoint
        self.log_step: Optional[torch.Tensor] = None  # (N,): each chain's log step size

    def _init_chains(self, vae: VAE, num_data: int, device: torch.device) -> None:
        if self.chains is None or self.chains.shape[0] != num_data:
            with torch.no_grad():
                self.chains = vae.prior_dist().sample((num_data,))
            self.log_step = torch.full((num_data,), float(torch.tensor(self.initial_step_size).log()), device=self.chains.device)
        elif self.chains.device != device:  # read from a checkpoint (on the CPU), or the run moved device
            self.chains, self.log_step = self.chains.to(device), self.log_step.to(device)

    def e_step(self, vae: VAE, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """HMC on the minibatch's chains (one chain per datapoint); returns their new latents."""

        densities = model_log_densities(vae, x)

        def potential(z: torch.Tensor) -> torch.Tensor:
            log_prior, log_lik = densities(z)
            return -(log_prior + log_lik)

        kernel = BatchedHMC(potential, step_size=self.log_step[idx].exp().unsqueeze(0), num_leapfrog=self.num_leapfrog)
        z = self.chains[idx].unsqueeze(0)  # (1, batch, D)
        for _ in range(self.hmc_steps):
            z, accept = kernel.step(z)
            # Robbins-Monro nudge towards the target acceptance, remembered per datapoint.
            self.log_step[idx] += 0.5 * (accept[0] - self.target_accept)
            kernel.step_size = self.log_step[idx].exp().unsqueeze(0)
        self.chains[idx] = z[0].detach()
        return z.detach()

    def step_losses(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> Iterator[torch.Tensor]:
        if idx is None:
            idx = torch.arange(x.shape[0], device=x.device)
        self._init_chains(vae, num_data, x.device)
        z = self.e_step(vae, x, idx)
        for _ in range(self.m_steps):
            log_prior, log_lik = log_densities(vae.model, {"z": z}, x)
            yield -(log_prior + log_lik).sum() * (num_data / x.shape[0])

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        *_, last = self.step_losses(vae, x, idx, num_data)
        return last

    def to_inference_data(self) -> Any:
        """The E-step's persistent chains as ``arviz.InferenceData``: one draw (the current state)
        of every training point's latent, with each chain's step size as its ``sample_stats``."""
        if self.chains is None:
            raise ValueError("the chains start at the first training step; train before reading them")
        return to_inference_data(self.chains.detach().cpu()[None, None],
                                 sample_stats={"step_size": self.log_step.detach().exp().cpu()[None, None]})

    def state_dict(self) -> Dict[str, Any]:
        return {} if self.chains is None else {"chains": self.chains, "log_step": self.log_step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state:
            self.chains, self.log_step = state["chains"], state["log_step"]


@OBJECTIVES.register("mcem")
def mcem(
    *, num_leapfrog: int = 10, target_accept: float = 0.9, initial_step_size: float = 0.1, m_steps: int = 5, hmc_steps: int = 1
) -> Objective:
    """Monte Carlo EM with an HMC E-step (AEVB Sec. 5): no encoder is trained."""
    num_leapfrog, m_steps, hmc_steps = count("num_leapfrog", num_leapfrog), count("m_steps", m_steps), count("hmc_steps", hmc_steps)
    if not 0 < target_accept < 1 or initial_step_size <= 0:
        raise ValueError(f"target_accept must lie in (0, 1) and initial_step_size be > 0, got {target_accept} and {initial_step_size}")
    return MonteCarloEM(num_leapfrog, target_accept, initial_step_size, m_steps, hmc_steps)
