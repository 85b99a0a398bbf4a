"""Wake-sleep and reweighted wake-sleep, the paper's baselines trained on the same model, guide and
registry (AEVB Sec. 5, Fig. 2), registered as ``wake_sleep`` and ``rws``.

* **Wake-sleep** (Hinton, Dayan, Frey & Neal 1995). Wake: z ~ q(z|x) without a reparameterized
  path, ascend log p(x, z) in the generative parameters. Sleep: dream (z, x) ~ p(z) p(x|z) and ascend
  log q(z|x) in the recognition parameters. Per datapoint; K = 1 allowed.
* **Reweighted wake-sleep** (Bornschein & Bengio 2015). K samples from q with self-normalised
  importance weights *per datapoint* (Pyro's ``ReweightedWakeSleep`` normalises over the whole
  batch, needs K > 1 and no subsampling). Wake-theta: sum_k w_k log p(x, z_k). Recognition: a mix of
  wake-phi (sum_k w_k log q(z_k|x)) and sleep-phi, weighted ``wake_phi_weight`` : 1 - it.

All terms come from Pyro traces (:mod:`pyro_vae.traces`). Minibatch sums are scaled by N/M like
the ELBO objectives, so the optimizers see gradients of the same size; the sleep term, a sum over
D dreams, is scaled by N/D. The wake term's gradient reaches only the generative parameters and the
sleep term's only the recognition parameters (tested), so under Adagrad, whose update
``lr * g / sqrt(sum g^2)`` is unchanged by a constant factor on g, a relative weight between the two
phases would move nothing but their balance against the weight prior.

At the start the sleep gradient is noise around zero: dreams from an untrained decoder do not depend
on z, and q(z|x) = p(z) already fits them. Adagrad scales each coordinate's step to about the step
size whatever the gradient's size, so the first sleep steps move the recognition model at random,
coherently over the hidden units that feed each output. At a step size that suits AEVB (0.02 on the
paper's MNIST model) that carries q far from the prior, on dreams and data alike; the wake phase
then fits the decoder at latents the prior never draws, and the dreams stay noise.
``examples/wake_sleep_study.py`` measures this (``docs/results.md``); the paper's protocol of
choosing each method's step size from {0.01, 0.02, 0.1} avoids it.
"""

from __future__ import annotations

from typing import Optional

import torch

from pyro_vae.errors import ConfigError
from pyro_vae.model import VAE
from pyro_vae.objectives.base import Objective
from pyro_vae.components.priors import VampPrior
from pyro_vae.components.registry import OBJECTIVES
from pyro_vae.traces import guide_log_prob, log_densities, sample_latents
from pyro_vae.user_numbers import count


def _reject_encoder_prior(vae: VAE, name: str) -> None:
    if isinstance(vae.prior, VampPrior):
        raise ConfigError(
            f"objective {name!r} cannot train a VampPrior: the prior is built from the recognition network, so the "
            "wake phase would train the encoder through the prior. Use another prior, or a trace/iwae objective."
        )


def _sleep_term(vae: VAE, dream_batch_size: int) -> torch.Tensor:
    """sum over dreams of log q(z | x), (z, x) ~ p(z) p(x|z): gradients reach the guide only."""
    with torch.no_grad():  # the dreams are the sleep phase's data: nothing flows back through them
        x_dream, z_dream = vae.simulate(dream_batch_size)
    return guide_log_prob(vae.guide, {"z": z_dream.unsqueeze(0)}, x_dream).sum()


class _WakeSleepFamily(Objective):
    """What wake-sleep and RWS share: K particles from q with no gradient path, and dreams."""

    capturable = True

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
    """Wake-sleep's two phases as one loss, for a minibatch of M of the N points::

        -[ (N/M) sum_n (1/K) sum_k log p(x_n, z_nk)  +  (N/D) sum_d log q(z_d | x_d) ]

    with z_nk ~ q(z | x_n) drawn without a gradient path (wake) and (z_d, x_d) ~ p(z) p(x | z)
    dreamt without one (sleep): the first term's gradient reaches the generative parameters only,
    the second's the recognition parameters only."""

    name = "wake_sleep"

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        batch = x.shape[0]
        z = self._particles(vae, x)
        log_prior, log_lik = log_densities(vae.model, {"z": z}, x)
        wake = (log_prior + log_lik).mean(0).sum() * (num_data / batch)
        return -(wake + self._scaled_sleep(vae, batch, num_data))


class ReweightedWakeSleep(_WakeSleepFamily):
    """Reweighted wake-sleep's loss, for a minibatch of M of the N points::

        -[ (N/M) sum_n sum_k w_nk (log p(x_n, z_nk) + a log q(z_nk | x_n))  +  (1 - a) sleep ]

    with K draws z_nk ~ q(z | x_n), w_nk = softmax_k(log p(x_n, z_nk) - log q(z_nk | x_n)) held
    constant and normalised per datapoint, a = ``wake_phi_weight``, and the sleep term as in
    :class:`WakeSleep` (left out when a = 1)."""

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


def _dreams(dream_batch_size: Optional[int]) -> Optional[int]:
    """The dreams per sleep step: None for as many as the minibatch has points, else a count >= 1."""
    return None if dream_batch_size is None else count("dream_batch_size", dream_batch_size)


@OBJECTIVES.register("wake_sleep")
def wake_sleep(*, num_particles: int = 1, dream_batch_size: Optional[int] = None) -> Objective:
    """Wake-sleep (Hinton et al. 1995), the paper's baseline with the same recognition model."""
    return WakeSleep(count("num_particles", num_particles), _dreams(dream_batch_size))


@OBJECTIVES.register("rws")
def rws(*, num_particles: int = 5, wake_phi_weight: float = 0.5, dream_batch_size: Optional[int] = None) -> Objective:
    """Reweighted wake-sleep (Bornschein & Bengio 2015) with per-datapoint weights."""
    if not 0 <= wake_phi_weight <= 1:
        raise ValueError(f"wake_phi_weight must lie in [0, 1], got {wake_phi_weight}")
    return ReweightedWakeSleep(count("num_particles", num_particles), wake_phi_weight, _dreams(dream_batch_size))
