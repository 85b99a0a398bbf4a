"""A linear-Gaussian latent variable model with closed-form marginal and posterior.

    z ~ N(0, I_d),   x | z ~ N(W z + b, sigma^2 I_D)
    => x ~ N(b, W W^T + sigma^2 I),   z | x ~ N(A (x - b), S)  with
       S = (I + W^T W / sigma^2)^-1,  A = S W^T / sigma^2.

It is probabilistic PCA (Tipping & Bishop 1999), whose maximum-likelihood W is known in closed
form; the tests use it to check the ELBO, IWAE, AIS, BDMC and the HMC kernel against exact values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch


@dataclass
class LinearGaussian:
    """The model above with its parameters, in float64; ``random`` draws them from a seed."""

    W: torch.Tensor  # (x_dim, z_dim)
    b: torch.Tensor  # (x_dim,)
    noise_std: float

    @staticmethod
    def random(x_dim: int, z_dim: int, noise_std: float, seed: int) -> "LinearGaussian":
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64)
        b = torch.randn(x_dim, generator=g, dtype=torch.float64)
        return LinearGaussian(W, b, float(noise_std))

    def sample(self, n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x, z), n points drawn with ``seed``; row by row, so the first m of n draws are the m draws."""
        x_dim, z_dim = self.W.shape
        # numpy draws in order (torch's randn fills in blocks whose layout depends on the size)
        noise = torch.from_numpy(np.random.default_rng(seed).standard_normal((n, z_dim + x_dim)))
        z = noise[:, :z_dim]
        x = z @ self.W.T + self.b + self.noise_std * noise[:, z_dim:]
        return x, z

    def marginal(self) -> torch.distributions.MultivariateNormal:
        cov = self.W @ self.W.T + self.noise_std**2 * torch.eye(self.W.shape[0], dtype=self.W.dtype)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per datapoint."""
        return self.marginal().log_prob(x.to(self.W.dtype))

    def posterior(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(n, z_dim)`` and covariance ``(z_dim, z_dim)`` of p(z | x)."""
        s2 = self.noise_std**2
        prec = torch.eye(self.W.shape[1], dtype=self.W.dtype) + self.W.T @ self.W / s2
        cov = torch.linalg.inv(prec)
        mean = (x.to(self.W.dtype) - self.b) @ (cov @ self.W.T / s2).T
        return mean, cov
