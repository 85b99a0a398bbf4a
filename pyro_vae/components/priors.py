"""Priors p(z). Each is an ``nn.Module`` whose ``forward`` returns a distribution with
``batch_shape == ()`` and ``event_shape == (z_dim,)``; Pyro's plates broadcast it over datapoints
and particles. Learned priors hold their parameters as module parameters, trained with the rest.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Normal, register_kl

from pyro_vae.components.distributions import HALF_LOG_2PI, LeanNormal
from pyro_vae.components.registry import PRIORS

Encode = Callable[[torch.Tensor], dist.Distribution]


class Prior(nn.Module):
    """p(z), the base of every prior in ``PRIORS``.

    ``forward(encode)`` returns a distribution with ``batch_shape == ()`` and ``event_shape ==
    (z_dim,)`` on all of R^D. ``encode`` maps a batch of data ``(K, x_dim)`` to q(z | x) with batch
    shape ``(K,)``: the model passes the guide's, for priors built from the recognition model
    (:class:`VampPrior`); the others ignore it.
    """

    z_dim: int

    def forward(self, encode: Optional[Encode] = None) -> dist.Distribution:  # pragma: no cover
        raise NotImplementedError


class UnitNormal(dist.Normal):
    """``Normal(0, 1)`` (elementwise), as a type of its own so that the analytic KL against it takes
    the short form below instead of torch's general Normal-Normal one (which divides by the unit
    scale and subtracts the zero mean, a dozen extra kernels forward and backward per step), and
    its log density is ``-z^2 / 2 - log(2 pi) / 2`` (three kernels instead of eight: the Monte
    Carlo ELBO, HMC and AIS evaluate it at every step)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_p = (value * value).mul(-0.5).sub(HALF_LOG_2PI)
        if log_p.shape != self.loc.shape:  # the distribution may carry more batch dimensions
            log_p = torch.broadcast_tensors(log_p, self.loc)[0]
        return log_p


@register_kl(Normal, UnitNormal)
def _kl_normal_unit_normal(q: Normal, p: UnitNormal) -> torch.Tensor:
    """KL(N(mu, s^2) || N(0, 1)) = (s^2 + mu^2 - 1) / 2 - log s per dimension (AEVB App. B)."""
    scale = q.scale
    kl = 0.5 * (scale * scale + q.loc * q.loc - 1.0) - scale.log()
    if kl.shape != p.loc.shape:  # the prior may carry more batch dimensions than q
        kl = torch.broadcast_tensors(kl, p.loc)[0]
    return kl


class StandardNormal(Prior):
    """p(z) = N(0, I): the paper's prior; the mean-field ELBO uses the analytic KL (AEVB App. B)."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.register_buffer("zero", torch.zeros(z_dim))
        # not in the state dict, so that checkpoints written before it existed still load
        self.register_buffer("one", torch.ones(z_dim), persistent=False)

    def forward(self, encode: Optional[Encode] = None) -> dist.Distribution:
        return UnitNormal(self.zero, self.one).to_event(1)


class LearnedNormal(Prior):
    """p(z) = N(mu, diag(sigma^2)) with learned mu and log sigma (KL stays analytic)."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    def forward(self, encode: Optional[Encode] = None) -> dist.Distribution:
        return LeanNormal(self.loc, self.log_scale.exp()).to_event(1)


class FixedFamily(Prior):
    """A fixed, factorised zero-centred prior: Laplace(0, b) or Student-t(nu, 0, s)."""

    def __init__(self, z_dim: int, make: Callable[[torch.Tensor], dist.Distribution]) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.make = make
        self.register_buffer("zero", torch.zeros(z_dim))

    def forward(self, encode: Optional[Encode] = None) -> dist.Distribution:
        return self.make(self.zero).to_event(1)


class MixtureOfGaussians(Prior):
    """p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2) with learned weights, means and scales."""

    def __init__(self, z_dim: int, components: int, init_spread: float) -> None:
        super().__init__()
        self.z_dim = z_dim
        # Spread the means so that components do not start identical (they would stay so).
        self.locs = nn.Parameter(init_spread * torch.randn(components, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, z_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def forward(self, encode: Optional[Encode] = None) -> dist.Distribution:
        comp = LeanNormal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), comp)


class _ExpandedMixture(dist.MixtureSameFamily):
    """MixtureSameFamily that hands its components points expanded to ``(..., K, D)`` rather than
    broadcast from ``(..., 1, D)``: conditional flows (IAF guides) cannot broadcast their context."""

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        x = super()._pad(x)
        k = self._num_component
        return x.expand(x.shape[: -1 - self._event_ndims] + (k,) + x.shape[x.dim() - self._event_ndims :])


class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k), u_k learned pseudo-inputs.

    The pseudo-inputs live in data space through a sigmoid, so they stay in [0, 1] like images.
    Works with any guide whose distribution has a batch dimension (the K pseudo-inputs).
    """

    def __init__(self, z_dim: int, x_dim: int, components: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.pseudo_logits = nn.Parameter(0.5 * torch.randn(components, x_dim))

    def forward(self, encode: Optional[Encode] = None) -> dist.Distribution:
        if encode is None:
            raise ValueError("the VampPrior needs the encoder: build it through pyro_vae.model.VAE")
        q_u = encode(torch.sigmoid(self.pseudo_logits))  # batch (K,), event (z_dim,)
        weights = torch.zeros(self.pseudo_logits.shape[0], device=self.pseudo_logits.device)
        return _ExpandedMixture(dist.Categorical(logits=weights), q_u)


@PRIORS.register("standard_normal")
def standard_normal(*, z_dim: int, x_dim: int) -> Prior:
    return StandardNormal(z_dim)


@PRIORS.register("learned_normal")
def learned_normal(*, z_dim: int, x_dim: int) -> Prior:
    return LearnedNormal(z_dim)


@PRIORS.register("laplace")
def laplace(*, z_dim: int, x_dim: int, scale: float = 1.0 / math.sqrt(2.0)) -> Prior:
    """Laplace(0, scale) per dimension; the default scale gives unit variance."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    return FixedFamily(z_dim, lambda zero: dist.Laplace(zero, scale * torch.ones_like(zero)))


@PRIORS.register("student_t")
def student_t(*, z_dim: int, x_dim: int, df: float = 3.0, scale: float = 1.0) -> Prior:
    """Student-t(df, 0, scale) per dimension: heavier tails than the Gaussian."""
    if df <= 0 or scale <= 0:
        raise ValueError("df and scale must be positive")
    return FixedFamily(z_dim, lambda zero: dist.StudentT(df * torch.ones_like(zero), zero, scale * torch.ones_like(zero)))


@PRIORS.register("mixture_of_gaussians")
def mixture_of_gaussians(*, z_dim: int, x_dim: int, components: int = 10, init_spread: float = 1.0) -> Prior:
    if components < 1:
        raise ValueError("components must be >= 1")
    if components > 1 and not 0 < init_spread < math.inf:
        # means that start equal get equal gradients and stay equal: one Gaussian in K copies
        raise ValueError(f"init_spread (the spread of the components' initial means) must be a finite number > 0, got {init_spread}")
    return MixtureOfGaussians(z_dim, components, init_spread)


@PRIORS.register("vamp")
def vamp(*, z_dim: int, x_dim: int, components: int = 500) -> Prior:
    if components < 1:
        raise ValueError("components must be >= 1")
    return VampPrior(z_dim, x_dim, components)
