"""The paper's baselines on the same model, guide and registry (AEVB Sec. 5, Figs. 2 and 3).

* **Wake-sleep** (Hinton, Dayan, Frey & Neal 1995). Wake: z ~ q(z|x) without a reparameterized
  path, ascend log p(x, z) in the generative parameters. Sleep: dream (z, x) ~ p(z) p(x|z) and ascend
  log q(z|x) in the recognition parameters. Per datapoint; K = 1 allowed.
* **Reweighted wake-sleep** (Bornschein & Bengio 2015). K samples from q with self-normalised
  importance weights *per datapoint* (Pyro's ``ReweightedWakeSleep`` normalises over the whole
  batch, needs K > 1 and no subsampling). Wake-theta: sum_k w_k log p(x, z_k). Recognition: a mix of
  wake-phi (sum_k w_k log q(z_k|x)) and sleep-phi, weighted ``wake_phi_weight`` : 1 - it.
* **Monte Carlo EM** as in the paper: no encoder; one persistent latent chain per training point.
  E-step: one HMC trajectory (10 leapfrog steps) of the batched kernel for the minibatch's chains,
  each chain's step size nudged after every visit towards 90% acceptance. M-step: 5 optimizer steps
  on -log p(x, z) with the acquired sample.

All terms come from Pyro traces (:mod:`pyro_vae.traces`). Minibatch sums are scaled by N/M like
the ELBO objectives, so the optimizers see gradients of the same size.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import torch

from .errors import ConfigError
from .estimators.hmc import BatchedHMC
from .estimators.potentials import model_log_densities
from .model import VAE
from .objectives import Objective
from .priors import VampPrior
from .registry import OBJECTIVES
from .traces import guide_log_prob, log_densities, sample_latents


def _reject_encoder_prior(vae: VAE, name: str) -> None:
    if isinstance(vae.prior, VampPrior):
        raise ConfigError(
            f"objective {name!r} cannot train a VampPrior: the prior is built from the recognition network, so the "
            "wake phase would train the encoder through the prior. Use another prior, or a trace/iwae objective."
        )


def _sleep_term(vae: VAE, dream_batch_size: int) -> torch.Tensor:
    """sum over dreams of log q(z | x), (z, x) ~ p(z) p(x|z): gradients reach the guide only."""
    x_dream, z_dream = vae.simulate(dream_batch_size)
    return guide_log_prob(vae.guide, {"z": z_dream.unsqueeze(0)}, x_dream).sum()


class _WakeSleepFamily(Objective):
    """What wake-sleep and RWS share: K particles from q with no gradient path, and dreams."""

    def __init__(self, num_particles: int, dream_batch_size: Optional[int]) -> None:
        self.num_particles = num_particles
        self.dream_batch_size = dream_batch_size

    def check(self, vae: VAE) -> None:
        _reject_encoder_prior(vae, self.name)

    def _particles(self, vae: VAE, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sample_latents(vae.guide, self.num_particles, x)["z"]  # (K, batch, D)

    def _scaled_sleep(self, vae: VAE, batch: int, num_data: int) -> torch.Tensor:
        dreams = self.dream_batch_size or batch
        return _sleep_term(vae, dreams) * (num_data / dreams)


class WakeSleep(_WakeSleepFamily):
    name = "wake_sleep"

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        batch = x.shape[0]
        z = self._particles(vae, x)
        log_prior, log_lik = log_densities(vae.model, {"z": z}, x)
        wake = (log_prior + log_lik).mean(0).sum() * (num_data / batch)
        return -(wake + self._scaled_sleep(vae, batch, num_data))


class ReweightedWakeSleep(_WakeSleepFamily):
    name = "rws"

    def __init__(self, num_particles: int, wake_phi_weight: float, dream_batch_size: Optional[int]) -> None:
        super().__init__(num_particles, dream_batch_size)
        self.wake_phi_weight = wake_phi_weight

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        batch = x.shape[0]
        z = self._particles(vae, x)
        log_prior, log_lik = log_densities(vae.model, {"z": z}, x)  # grads: generative parameters
        log_q = guide_log_prob(vae.guide, {"z": z}, x)  # grads: recognition parameters
        weights = torch.softmax((log_prior + log_lik - log_q).detach(), dim=0)  # normalised per datapoint
        scale = num_data / batch
        wake_theta = (weights * (log_prior + log_lik)).sum() * scale
        recognition = self.wake_phi_weight * (weights * log_q).sum() * scale
        if self.wake_phi_weight < 1:
            recognition = recognition + (1 - self.wake_phi_weight) * self._scaled_sleep(vae, batch, num_data)
        return -(wake_theta + recognition)


class MonteCarloEM(Objective):
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

    def state_dict(self) -> Dict[str, Any]:
        return {} if self.chains is None else {"chains": self.chains, "log_step": self.log_step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state:
            self.chains, self.log_step = state["chains"], state["log_step"]


@OBJECTIVES.register("wake_sleep")
def wake_sleep(*, num_particles: int = 1, dream_batch_size: Optional[int] = None) -> Objective:
    """Wake-sleep (Hinton et al. 1995), the paper's baseline with the same recognition model."""
    if num_particles < 1:
        raise ValueError("num_particles must be >= 1")
    return WakeSleep(num_particles, dream_batch_size)


@OBJECTIVES.register("rws")
def rws(*, num_particles: int = 5, wake_phi_weight: float = 0.5, dream_batch_size: Optional[int] = None) -> Objective:
    """Reweighted wake-sleep (Bornschein & Bengio 2015) with per-datapoint weights."""
    if num_particles < 1 or not 0 <= wake_phi_weight <= 1:
        raise ValueError("num_particles must be >= 1 and wake_phi_weight in [0, 1]")
    return ReweightedWakeSleep(num_particles, wake_phi_weight, dream_batch_size)


@OBJECTIVES.register("mcem")
def mcem(
    *, num_leapfrog: int = 10, target_accept: float = 0.9, initial_step_size: float = 0.1, m_steps: int = 5, hmc_steps: int = 1
) -> Objective:
    """Monte Carlo EM with an HMC E-step (AEVB Sec. 5): no encoder is trained."""
    if min(num_leapfrog, m_steps, hmc_steps) < 1 or not 0 < target_accept < 1 or initial_step_size <= 0:
        raise ValueError("num_leapfrog, m_steps, hmc_steps must be >= 1, target_accept in (0, 1), initial_step_size > 0")
    return MonteCarloEM(num_leapfrog, target_accept, initial_step_size, m_steps, hmc_steps)
