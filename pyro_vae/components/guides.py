"""Guides q(z|x): read the encoder's raw outputs as an amortized approximate posterior.

Each guide says how many encoder outputs it needs and returns a reparameterizable distribution
with ``event_shape == (z_dim,)`` and the datapoints as batch shape.
"""

from __future__ import annotations

from typing import List

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import Permute, conditional_affine_autoregressive
from torch import nn

from pyro_vae.components.distributions import LeanNormal
from pyro_vae.components.registry import GUIDES


class Guide(nn.Module):
    """The head of q(z | x), the base of every guide in ``GUIDES``: it turns the encoder network's
    output ``raw`` ``(..., num_outputs())`` into a distribution with batch shape ``raw.shape[:-1]``
    and event shape ``(z_dim,)``, on all of R^D, reparameterized (``rsample``) for the ELBO
    objectives."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim

    def num_outputs(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def forward(self, raw: torch.Tensor) -> dist.Distribution:  # pragma: no cover
        raise NotImplementedError


class DiagonalNormal(Guide):
    """q(z|x) = N(mu(x), diag sigma^2(x)) with ``log sigma^2`` as the network output (AEVB App. C.2)."""

    def num_outputs(self) -> int:
        return 2 * self.z_dim

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        loc, log_var = raw[..., : self.z_dim], raw[..., self.z_dim :]
        return LeanNormal(loc, torch.exp(0.5 * log_var)).to_event(1)


class FullNormal(Guide):
    """q(z|x) = N(mu(x), L(x) L(x)^T), L lower triangular with a positive (softplus) diagonal."""

    def __init__(self, z_dim: int) -> None:
        super().__init__(z_dim)
        rows, cols = torch.tril_indices(z_dim, z_dim, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def num_outputs(self) -> int:
        d = self.z_dim
        return 2 * d + d * (d - 1) // 2

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        d = self.z_dim
        loc = raw[..., :d]
        diag = F.softplus(raw[..., d : 2 * d]) + 1e-5
        tril = torch.diag_embed(diag)
        if d > 1:
            tril[..., self.rows, self.cols] = raw[..., 2 * d :]  # tril is a fresh tensor: safe in place
        return dist.MultivariateNormal(loc, scale_tril=tril)


class InverseAutoregressiveFlow(Guide):
    """IAF guide (Kingma et al. 2016): a diagonal Gaussian pushed through ``num_flows`` conditional
    affine autoregressive transforms (Pyro's ``ConditionalAffineAutoregressive``) whose context
    is an encoder output h(x), with the order of z reversed between flows."""

    def __init__(self, z_dim: int, num_flows: int, hidden_dims: List[int], context_dim: int) -> None:
        super().__init__(z_dim)
        self.context_dim = context_dim
        self.flows = nn.ModuleList(
            conditional_affine_autoregressive(z_dim, context_dim, hidden_dims=list(hidden_dims)) for _ in range(num_flows)
        )
        self.register_buffer("reverse", torch.arange(z_dim - 1, -1, -1), persistent=False)

    def num_outputs(self) -> int:
        return 2 * self.z_dim + self.context_dim

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        d = self.z_dim
        loc, log_var, context = raw[..., :d], raw[..., d : 2 * d], raw[..., 2 * d :]
        base = LeanNormal(loc, torch.exp(0.5 * log_var)).to_event(1)
        transforms = []
        for i, flow in enumerate(self.flows):
            if i:
                transforms.append(Permute(self.reverse))
            transforms.append(flow.condition(context))
        return dist.TransformedDistribution(base, transforms)


@GUIDES.register("diag_normal")
def diag_normal(*, z_dim: int) -> Guide:
    return DiagonalNormal(z_dim)


@GUIDES.register("full_normal")
def full_normal(*, z_dim: int) -> Guide:
    return FullNormal(z_dim)


@GUIDES.register("iaf")
def iaf(*, z_dim: int, num_flows: int = 2, hidden_dims: List[int] = [64], context_dim: int = 16) -> Guide:  # noqa: B006
    if num_flows < 1 or context_dim < 1:
        raise ValueError("num_flows and context_dim must be >= 1")
    if not hidden_dims or min(hidden_dims) < z_dim:
        # Pyro's autoregressive networks need a hidden layer at least as wide as z (MADE's masks)
        raise ValueError(f"hidden_dims must list one or more layer widths >= z_dim ({z_dim}), got {list(hidden_dims)}")
    return InverseAutoregressiveFlow(z_dim, num_flows, hidden_dims, context_dim)
