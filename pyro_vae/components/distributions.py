"""Distributions with cheaper log-densities, same values as Pyro's (up to float rounding)."""

from __future__ import annotations

import math
from typing import Optional

import pyro.distributions as dist
import torch
from torch.distributions import constraints

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)  # the normalizer of a unit Gaussian, per dimension


def is_real_support(support: constraints.Constraint) -> bool:
    """Whether a distribution's support is all of R^D (``real``, made an event or a mixture's)."""
    while hasattr(support, "base_constraint"):  # independent(real, 1), a mixture of such, ...
        support = support.base_constraint
    return isinstance(support, type(constraints.real))


class TypeKeepingExpand:
    """Mixin for a distribution subclass: ``expand`` keeps the subclass (torch's would build the
    parent class), and expanding to the batch shape it already has returns the distribution
    itself. Pyro's plates expand every sample site's distribution, mostly to the shape it has,
    and torch would build a new one with fresh views of its parameters (and autograd nodes for
    them) at every step."""

    def expand(self, batch_shape: torch.Size | tuple, _instance: Optional[dist.Distribution] = None) -> dist.Distribution:
        if _instance is None and torch.Size(batch_shape) == self.batch_shape:  # type: ignore[attr-defined]
            return self
        new = self._get_checked_instance(type(self), _instance)  # type: ignore[attr-defined]
        return super().expand(batch_shape, _instance=new)  # type: ignore[misc]


class LeanNormal(TypeKeepingExpand, dist.Normal):
    """``Normal(loc, scale)`` whose log density is computed as::

        log N(x; mu, sigma) = -t^2 / 2 - (log sigma + log(2 pi) / 2),   t = (x - mu) / sigma

    in three full-size kernels (subtract, divide, multiply-add) where torch's takes seven, and with
    ``log sigma`` taken on the parameters as they were built: once a plate has expanded the
    distribution to (particles, batch, z_dim), torch's formula squares and logs the expanded scale
    again at every call. Used by the guides (every ELBO with a Monte Carlo KL and every IWAE chunk
    evaluates log q(z|x)), the learned Gaussian priors and the Gaussian likelihood. Sampling and
    the KL registry are ``Normal``'s: analytic KLs dispatch to the parent class.
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        super().__init__(loc, scale, validate_args=validate_args)
        self._scale_as_built = self.scale

    def expand(self, batch_shape: torch.Size | tuple, _instance: Optional[dist.Distribution] = None) -> dist.Distribution:
        new = super().expand(batch_shape, _instance)
        new._scale_as_built = self._scale_as_built
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        t = (value - self.loc) / self.scale
        scale_as_built = getattr(self, "_scale_as_built", self.scale)  # (batch as built, event): small
        neg_log_norm = (-HALF_LOG_2PI) - scale_as_built.log()
        return torch.addcmul(neg_log_norm, t, t, value=-0.5)
