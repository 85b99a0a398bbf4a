"""The importance-weighted objective of Burda, Grosse & Salakhutdinov (2015), registered as ``iwae``."""

from __future__ import annotations

import math
from typing import Optional

import torch

from pyro_vae.components.registry import OBJECTIVES
from pyro_vae.model import VAE
from pyro_vae.objectives.base import Objective
from pyro_vae.traces import log_importance_weights
from pyro_vae.user_numbers import count


class IWAEObjective(Objective):
    """The importance-weighted bound (Burda, Grosse & Salakhutdinov 2015)::

        L_k(x) = E[ log (1/k) sum_i p(x, z_i) / q(z_i | x) ],   z_i ~ q(z | x)

    computed per datapoint from unscaled log-probs; the minibatch sum is scaled by N/M *after* the
    log-sum-exp (``RenyiELBO(alpha=0)`` puts the scale inside it, which biases the bound).
    """

    name = "iwae"
    capturable = True

    def __init__(self, num_particles: int) -> None:
        self.num_particles = num_particles

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        log_w = log_importance_weights(vae.model, vae.guide, x, num_particles=self.num_particles)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)  # (batch,)
        return -bound.sum() * (num_data / x.shape[0])


@OBJECTIVES.register("iwae")
def iwae(*, num_particles: int = 5) -> Objective:
    """The importance-weighted bound L_k with k = ``num_particles`` (k = 1: the ELBO)."""
    return IWAEObjective(count("num_particles", num_particles))
