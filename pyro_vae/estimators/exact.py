"""Exact log p(x) for linear-Gaussian VAEs, the ground truth of the estimator tests.

A VAE whose prior is N(0, I), whose decoder is one linear layer and whose likelihood is a Gaussian
with fixed standard deviation is the linear-Gaussian model of :mod:`pyro_vae.data.linear_gaussian`; its
log p(x) and posterior are closed-form. ``exact_vae`` builds that VAE from known parameters with the
exact posterior as its (full-covariance) guide, so that every importance weight equals p(x).
"""

from __future__ import annotations

import torch

from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.model import VAE, build_vae


def linear_gaussian_of(vae: VAE) -> LinearGaussian:
    """Read W, b, sigma out of a linear-Gaussian VAE (raises ValueError for any other VAE)."""
    from pyro_vae.components.likelihoods import LocScale
    from pyro_vae.components.networks import MLP
    from pyro_vae.components.priors import StandardNormal

    if not isinstance(vae, VAE):
        raise TypeError(f"exact log p(x) reads a trained pyro-vae VAE (load_run(folder).vae), got {type(vae).__name__}")
    dec = vae.decoder
    lik = vae.likelihood
    if not (isinstance(vae.prior, StandardNormal) and isinstance(dec, MLP) and len(dec) == 1 and isinstance(lik, LocScale)
            and lik.family == "gaussian" and lik.variance == "fixed" and not lik.sigmoid_mean and lik.min_std == 0):
        raise ValueError("exact log p(x) needs a standard-normal prior, a linear decoder (mlp, hidden: []) and a "
                         "Gaussian likelihood with fixed variance, no sigmoid mean and min_std 0")
    layer = dec[0]
    return LinearGaussian(layer.weight.detach().double().cpu(), layer.bias.detach().double().cpu(), float(lik.fixed_std))


def exact_log_px(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Closed-form log p(x) per datapoint of a linear-Gaussian VAE."""
    return linear_gaussian_of(vae).log_marginal(x.detach().cpu())


def linear_gaussian_vae(truth: LinearGaussian, guide: str = "full_normal") -> VAE:
    """A VAE of the same form as ``truth`` (linear encoder and decoder), freshly initialised."""
    x_dim, z_dim = truth.W.shape
    return build_vae((x_dim,), z_dim, prior={"name": "standard_normal"},
                     likelihood={"name": "gaussian", "variance": "fixed", "fixed_std": truth.noise_std},
                     guide={"name": guide}, encoder={"name": "mlp", "hidden": []}, decoder={"name": "mlp", "hidden": []})


@torch.no_grad()
def exact_vae(truth: LinearGaussian) -> VAE:
    """The linear-Gaussian model as a VAE whose guide is the exact posterior."""
    x_dim, d = truth.W.shape
    vae = linear_gaussian_vae(truth)
    dec, enc = vae.decoder[0], vae.encoder[0]
    dec.weight.copy_(truth.W)
    dec.bias.copy_(truth.b)
    # posterior mean A (x - b): encoder rows 0..d-1
    s2 = truth.noise_std**2
    prec = torch.eye(d, dtype=truth.W.dtype) + truth.W.T @ truth.W / s2
    cov = torch.linalg.inv(prec)
    A = cov @ truth.W.T / s2
    L = torch.linalg.cholesky(cov)
    enc.weight.zero_()
    enc.bias.zero_()
    enc.weight[:d] = A
    enc.bias[:d] = -A @ truth.b
    diag = torch.diagonal(L) - 1e-5  # FullNormal adds 1e-5 after the softplus
    enc.bias[d : 2 * d] = torch.log(torch.expm1(diag))
    rows, cols = torch.tril_indices(d, d, offset=-1)
    enc.bias[2 * d :] = L[rows, cols]
    return vae
