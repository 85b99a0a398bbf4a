"""Distributions with cheaper log-densities, same values as Pyro's (up to float rounding)."""

from __future__ import annotations

import math
from typing import Optional

import pyro.distributions as dist
import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)  # the normalizer of a unit Gaussian, per dimension


class LeanNormal(dist.Normal):
    """``Normal(loc, scale)`` whose log density is computed as::

        log N(x; mu, sigma) = -t^2 / 2 - (log sigma + log(2 pi) / 2),   t = (x - mu) / sigma

    in three full-size kernels (subtract, divide, multiply-add) where torch's takes seven, and with
    ``log sigma`` taken on the parameters as they were built: once a plate has expanded the
    distribution to (particles, batch, z_dim), torch's formula squares and logs the expanded scale
    again at every call. Used by the guides (every ELBO with a Monte Carlo KL and every IWAE chunk
    evaluates log q(z|x)), the learned Gaussian priors and the Gaussian likelihood. Sampling and
    the KL registry are ``Normal``'s: analytic KLs dispatch to the parent class.

    ``expand`` to its own batch shape returns the distribution itself: Pyro's plates expand every
    sample site's distribution, mostly to the shape it has, and torch would build a new one with
    fresh views of loc and scale (and autograd nodes for them). Measured interleaved with the
    likelihood's same shortcut, batch 100: 0.5-1.6% of an eager training step.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        super().__init__(loc, scale, validate_args=validate_args)
        self._scale_as_built = self.scale

    def expand(self, batch_shape, _instance=None):
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:
            return self  # Pyro's plates expand every site's distribution, mostly to its own shape
        new = self._get_checked_instance(LeanNormal, _instance)
        new = super().expand(batch_shape, _instance=new)
        new._scale_as_built = self._scale_as_built
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        t = (value - self.loc) / self.scale
        scale_as_built = getattr(self, "_scale_as_built", self.scale)  # (batch as built, event): small
        neg_log_norm = (-HALF_LOG_2PI) - scale_as_built.log()
        return torch.addcmul(neg_log_norm, t, t, value=-0.5)
