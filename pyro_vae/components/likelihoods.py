"""Likelihoods p(x|z): read the decoder's raw outputs as the parameters of a distribution.

Each likelihood says how many decoder outputs it needs (``num_outputs``), turns them into a
distribution with ``event_shape == (x_dim,)`` (pixels independent given z), checks that data lies
in its support, and may map data before it is scored (``prepare``: the Beta clamps to (0, 1)).
Raw outputs are laid out parameter-major: ``raw[..., :x_dim]`` is the first parameter.
"""

from __future__ import annotations

from typing import Literal, Optional

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.components.distributions import LeanNormal, TypeKeepingExpand
from pyro_vae.components.registry import LIKELIHOODS


class Likelihood(nn.Module):
    """p(x | z) from the decoder network, the base of every likelihood in ``LIKELIHOODS``.

    ``forward(raw)`` turns the decoder's output ``(..., num_outputs())`` into a distribution with
    batch shape ``raw.shape[:-1]`` and event shape ``(x_dim,)``. ``prepare(x)`` maps data as stored
    to what ``log_prob`` reads (identity unless overridden); ``support_violation(x)`` says how
    ``x`` leaves the support (checked over the whole data set before training), described to the
    user by ``support_text``.
    """

    support_text = "any real value"

    def __init__(self, x_dim: int) -> None:
        super().__init__()
        self.x_dim = x_dim

    def num_outputs(self) -> int:
        return self.x_dim

    def forward(self, raw: torch.Tensor) -> dist.Distribution:  # pragma: no cover
        raise NotImplementedError

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def support_violation(self, x: torch.Tensor) -> Optional[str]:
        """A description of how ``x`` leaves the support, or None if it is inside."""
        if not torch.isfinite(x).all():
            return "it contains NaN or infinite values"
        return None

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        """E[x | z], for pictures of samples, reconstructions and manifolds."""
        return self(raw).mean


class LogitBernoulli(TypeKeepingExpand, dist.Bernoulli):
    """``Bernoulli(logits=y)`` that keeps its type when expanded (as the base of
    :class:`IndependentLogitBernoulli`)."""

    def __init__(self, logits: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        super().__init__(logits=logits, validate_args=validate_args)


def _broadcasts_into(shape: torch.Size, target: torch.Size) -> bool:
    """Whether ``shape`` broadcasts to ``target`` unchanged (``torch.broadcast_shapes``' first call
    imports sympy, a large part of a first training step's time)."""
    return len(shape) <= len(target) and all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


class IndependentLogitBernoulli(TypeKeepingExpand, dist.Independent):
    """``Bernoulli(logits=y).to_event(1)`` (pixels independent given z) with a cheaper log-prob::

        log p(x | y) = sum_i [ x_i y_i - softplus(y_i) ]

    the same value as torch's ``-binary_cross_entropy_with_logits(y, x).sum(-1)`` (also for soft
    targets in [0, 1]), with the sign flipped after the sum over pixels instead of on every pixel
    (a full elementwise pass and its backward saved per step). Without gradients (IWAE-k scores
    k x 784 pixels per datapoint) it takes two elementwise passes, ``softplus(y) - x * y``, without
    broadcasting ``x`` to the logits' shape; with gradients it keeps torch's fused
    ``binary_cross_entropy_with_logits``, whose backward is a single pass.
    """

    def __init__(self, logits: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        super().__init__(LogitBernoulli(logits, validate_args=validate_args), 1, validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        base = self.base_dist
        if base._validate_args:
            base._validate_sample(value)
        logits = base.logits
        fits = _broadcasts_into(value.shape, logits.shape)  # e.g. data (batch, D) against (particles, batch, D)
        if torch.is_grad_enabled() and (logits.requires_grad or value.requires_grad):
            if not fits:
                return super().log_prob(value)
            target = value.expand(logits.shape)  # a view: no copy
            return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1).neg()
        neg_log_p = F.softplus(logits)
        if fits:
            neg_log_p.addcmul_(value, logits, value=-1.0)
        else:
            neg_log_p = torch.addcmul(neg_log_p, value, logits, value=-1.0)
        return neg_log_p.sum(-1).neg_()


def _outside_unit_interval(x: torch.Tensor) -> Optional[str]:
    """How ``x`` leaves [0, 1] (its range), or None where it stays inside."""
    if ((x < 0) | (x > 1)).any():
        return f"values lie outside [0, 1] (min {x.min().item():.3g}, max {x.max().item():.3g})"
    return None


class Bernoulli(Likelihood):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(y_i)): the paper's MNIST decoder (AEVB App. C.1)."""

    support_text = "{0, 1} (binary data)"

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        return IndependentLogitBernoulli(raw)

    def support_violation(self, x: torch.Tensor) -> Optional[str]:
        bad = super().support_violation(x)
        if bad is None and (outside := _outside_unit_interval(x)):
            # binarizing alone would not help: Bernoulli draws need probabilities in [0, 1]
            return outside + "; rescale the data to [0, 1] grey levels, then set data.binarize to 'dynamic' or 'static'"
        if bad is None and not ((x == 0) | (x == 1)).all():
            return "it is not binary (grey levels found); set data.binarize to 'dynamic' or 'static', or use likelihood continuous_bernoulli"
        return bad

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)


class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): a proper density on [0, 1]."""

    support_text = "[0, 1]"

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=raw).to_event(1)

    def support_violation(self, x: torch.Tensor) -> Optional[str]:
        bad = super().support_violation(x)
        if bad is None and (outside := _outside_unit_interval(x)):
            return outside + "; rescale the data to [0, 1]"
        return bad


Variance = Literal["fixed", "learned", "decoder"]


class LocScale(Likelihood):
    """Gaussian or Laplace with mean from the decoder and a scale that is fixed, learned per pixel,
    or output by the decoder (the paper's Frey Face decoder, AEVB App. C.2:
    ``mu = W4 h + b4``, ``log sigma^2 = W5 h + b5``, the mean optionally squashed by a sigmoid).
    """

    def __init__(self, x_dim: int, family: str, variance: Variance, fixed_std: float, sigmoid_mean: bool, min_std: float):
        super().__init__(x_dim)
        if variance not in ("fixed", "learned", "decoder"):
            raise ValueError(f"variance must be 'fixed', 'learned' or 'decoder', got {variance!r}")
        if fixed_std <= 0 or min_std < 0:
            raise ValueError("fixed_std must be > 0 and min_std >= 0")
        self.family, self.variance, self.sigmoid_mean = family, variance, sigmoid_mean
        self.fixed_std, self.min_std = fixed_std, min_std
        if variance == "learned":
            self.log_var = nn.Parameter(torch.zeros(x_dim))

    def num_outputs(self) -> int:
        return 2 * self.x_dim if self.variance == "decoder" else self.x_dim

    def _loc_std(self, raw: torch.Tensor):
        loc = raw[..., : self.x_dim]
        if self.sigmoid_mean:
            loc = torch.sigmoid(loc)
        if self.variance == "decoder":
            std = torch.exp(0.5 * raw[..., self.x_dim :])
        elif self.variance == "learned":
            std = torch.exp(0.5 * self.log_var).expand_as(loc)
        else:
            std = torch.full_like(loc, self.fixed_std)
        if self.min_std:
            std = std + self.min_std
        return loc, std

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        loc, std = self._loc_std(raw)
        if self.family == "gaussian":
            return LeanNormal(loc, std).to_event(1)
        # Laplace with the same variance: b = sigma / sqrt(2).
        return dist.Laplace(loc, std * 0.7071067811865476).to_event(1)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return self._loc_std(raw)[0]


class Beta(Likelihood):
    """Beta(alpha, beta) per pixel, alpha and beta = softplus(raw) + 1e-4. Data is clamped to
    [eps, 1 - eps] before scoring because the Beta density is infinite or zero at 0 and 1."""

    support_text = "[0, 1] (clamped to [eps, 1 - eps])"

    def __init__(self, x_dim: int, eps: float) -> None:
        super().__init__(x_dim)
        if not 0 < eps < 0.5:
            raise ValueError("eps must lie in (0, 0.5)")
        self.eps = eps

    def num_outputs(self) -> int:
        return 2 * self.x_dim

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        a = F.softplus(raw[..., : self.x_dim]) + 1e-4
        b = F.softplus(raw[..., self.x_dim :]) + 1e-4
        return dist.Beta(a, b).to_event(1)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.eps, 1 - self.eps)

    def support_violation(self, x: torch.Tensor) -> Optional[str]:
        bad = super().support_violation(x)
        if bad is None and (outside := _outside_unit_interval(x)):
            return outside + "; rescale the data to [0, 1]"
        if bad is None:
            # The Beta density is unbounded at 0 and 1: on data that sit there (binary images) the
            # decoder can raise log p(x) without limit, and the bound is no log-likelihood at all.
            at_edges = float(((x <= self.eps) | (x >= 1 - self.eps)).float().mean())
            if at_edges > 0.5:
                return (f"{at_edges:.0%} of the values lie at 0 or 1, where the Beta density has no upper bound (the ELBO "
                        "would grow without limit); use bernoulli or continuous_bernoulli for binary data")
        return bad


@LIKELIHOODS.register("bernoulli")
def bernoulli(*, x_dim: int) -> Likelihood:
    return Bernoulli(x_dim)


@LIKELIHOODS.register("continuous_bernoulli")
def continuous_bernoulli(*, x_dim: int) -> Likelihood:
    return ContinuousBernoulli(x_dim)


@LIKELIHOODS.register("gaussian")
def gaussian(
    *, x_dim: int, variance: Variance = "decoder", fixed_std: float = 1.0, sigmoid_mean: bool = False, min_std: float = 0.0
) -> Likelihood:
    """Gaussian; ``variance``: fixed (``fixed_std``), learned (one per pixel) or decoder (z-dependent)."""
    return LocScale(x_dim, "gaussian", variance, fixed_std, sigmoid_mean, min_std)


@LIKELIHOODS.register("laplace")
def laplace(
    *, x_dim: int, variance: Variance = "learned", fixed_std: float = 1.0, sigmoid_mean: bool = False, min_std: float = 0.0
) -> Likelihood:
    return LocScale(x_dim, "laplace", variance, fixed_std, sigmoid_mean, min_std)


@LIKELIHOODS.register("beta")
def beta(*, x_dim: int, eps: float = 1e-3) -> Likelihood:
    return Beta(x_dim, eps)
