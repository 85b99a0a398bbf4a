"""The marginal-likelihood estimator of AEVB Appendix D (Kingma & Welling 2013), for small z.

1. Draw L samples from the posterior p(z|x) by HMC (batched kernel, chains per datapoint).
2. Fit a density estimator q(z) to them: here a full-covariance Gaussian per datapoint (the paper
   does not name its estimator; a Gaussian is the natural choice for the paper's Nz = 3).
3. Draw L new posterior samples z_l and estimate

       p(x) ~= [ (1/L) sum_l q(z_l) / (p(z_l) p(x|z_l)) ]^-1.

This is a harmonic-mean-type (reciprocal importance sampling) estimator: it is consistent, and
well behaved when q is narrower than the posterior, which a Gaussian fit to posterior samples
usually is for small z. The paper evaluated with 4 leapfrog steps. For a program of one's own
with latents on a constrained support, chains, fit and estimate are in its unconstrained
coordinates u (:mod:`pyro_vae.programs`), with p(x, u) = p(x, T(u)) |det dT/du|: the Gaussian
then has no mass outside the support. The chains the estimate keeps are the sites' own values.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from pyro_vae.model import VAE, without_param_store
from pyro_vae.programs import accepts_pyro_programs, chain_values, flat_log_densities, sample_flat
from pyro_vae.mcmc.hmc import BatchedHMC, HMCStats, chain_diagnostics, to_inference_data
from pyro_vae.estimators.memory import bytes_per_chain, bytes_per_particle, datapoints_per_chunk
from pyro_vae.mcmc.potentials import model_log_densities
from pyro_vae.estimators.result import Estimate
from pyro_vae.estimators.options import DEFAULTS, resolved_memory_gb
from pyro_vae.user_numbers import count, is_real_number


@accepts_pyro_programs
@without_param_store
def hmc_marginal_likelihood(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int = DEFAULTS.hmc_samples,
    num_warmup: int = DEFAULTS.hmc_warmup,
    num_chains: int = DEFAULTS.hmc_chains,
    num_leapfrog: int = 4,
    step_size: float = 0.05,
    target_accept: float = 0.9,
    thin: int = 1,
    jitter: float = 1e-6,
    memory_gb: Optional[float] = DEFAULTS.memory_gb,
) -> Estimate:
    """AEVB App. D estimate of log p(x) per row of ``x``; ``num_samples`` per chain for the fit and
    as many again for the estimate (chains start from q(z|x) to shorten warmup).

    Each datapoint's chains, fit and estimate are its own, so the datapoints run in chunks whose
    working memory, measured on the model, stays under ``memory_gb``: the chains with their
    gradient pass, or the estimate's ``num_samples x num_chains`` draws scored at once."""
    num_samples, num_chains, num_warmup = count("num_samples", num_samples), count("num_chains", num_chains), count("num_warmup", num_warmup, 0)
    num_leapfrog, thin = count("num_leapfrog", num_leapfrog), count("thin", thin)
    if not is_real_number(jitter) or not 0 <= jitter < math.inf:
        raise ValueError(f"jitter (added to the diagonal of the fitted covariance) must be a finite number >= 0, got {jitter!r}")
    vae.check_points(x)
    memory_gb = resolved_memory_gb(memory_gb, x.device)
    if num_chains * num_samples <= vae.z_dim:
        # the full-covariance Gaussian fitted to the pooled draws would be singular: its estimate
        # would be any number at all
        raise ValueError(f"the App. D estimator fits a full-covariance Gaussian to the pooled draws, which needs more "
                         f"draws than the {vae.z_dim} latent dimensions; it has {num_chains} chains x {num_samples} "
                         f"samples = {num_chains * num_samples}. Raise --hmc-samples or --hmc-chains.")
    n = x.shape[0]
    per_point = max(num_chains * bytes_per_chain(vae, x), num_samples * num_chains * bytes_per_particle(vae, x))
    chunk = datapoints_per_chunk(n, per_point, memory_gb, x.device)
    per_point_log_px = torch.empty(n, dtype=torch.float64)
    accept, steps = torch.empty(num_chains, n), torch.empty(num_chains, n)
    eval_draws = torch.empty(num_samples, num_chains, n, vae.z_dim)  # for the chains' ESS and R-hat
    per_draw: dict = {}  # the sampler's statistics per draw, (num_samples, num_chains, n)
    for lo in range(0, n, chunk):
        part = slice(lo, min(n, lo + chunk))
        log_px, draws, stats = _estimate(vae, x[part], num_samples, num_warmup, num_chains, num_leapfrog, step_size,
                                         target_accept, thin, jitter)
        per_point_log_px[part], eval_draws[:, :, part] = log_px.cpu(), draws.cpu()
        accept[:, part], steps[:, part] = stats.accept_prob.cpu(), stats.step_size.cpu()
        for key, value in (stats.per_draw or {}).items():
            per_draw.setdefault(key, torch.empty((num_samples, num_chains, n), dtype=value.dtype))[:, :, part] = value.cpu()
    diagnostics = {"accept_mean": float(accept.mean()), "step_size_mean": float(steps.mean()),
                   "divergences": int(per_draw["diverging"].sum()) if per_draw else 0}
    diagnostics.update(chain_diagnostics(eval_draws))
    return Estimate(
        "hmc_appendix_d",
        per_point_log_px,
        settings={
            "num_samples": num_samples, "num_warmup": num_warmup, "num_chains": num_chains, "num_leapfrog": num_leapfrog,
            "target_accept": target_accept, "thin": thin, "density_estimator": "full-covariance Gaussian",
            "memory_gb": memory_gb, "chunk_datapoints": chunk,
        },
        diagnostics=diagnostics,
        chains=to_inference_data(chain_values(vae, eval_draws), sample_stats=per_draw),
    )


def _estimate(
    vae: VAE, x: torch.Tensor, num_samples: int, num_warmup: int, num_chains: int, num_leapfrog: int, step_size: float,
    target_accept: float, thin: int, jitter: float,
) -> Tuple[torch.Tensor, torch.Tensor, HMCStats]:
    """log p(x) per row of ``x`` (float64), the estimate's draws ``(S, C, B, D)`` and their HMC statistics."""
    densities = model_log_densities(vae, x)

    def potential(z: torch.Tensor) -> torch.Tensor:
        prior, lik = densities(z)
        return -(prior + lik)

    with torch.no_grad():
        z = sample_flat(vae, vae.guide, num_chains, x)
    kernel = BatchedHMC(potential, step_size=step_size, num_leapfrog=num_leapfrog, target_accept=target_accept)
    fit_draws, _ = kernel.run(z, num_warmup, num_samples, thin)  # (S, C, B, D)
    eval_draws, stats = kernel.run(fit_draws[-1], 0, num_samples, thin)

    d = fit_draws.shape[-1]
    pooled = fit_draws.permute(2, 0, 1, 3).reshape(x.shape[0], -1, d).double()  # (B, S*C, D)
    mean = pooled.mean(1)
    centred = pooled - mean.unsqueeze(1)
    cov = centred.transpose(1, 2) @ centred / max(1, pooled.shape[1] - 1)
    cov = cov + jitter * torch.eye(d, dtype=cov.dtype, device=cov.device)
    q = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)

    zs = eval_draws.reshape(-1, x.shape[0], d)  # (S*C, B, D)
    with torch.no_grad():
        prior, lik = flat_log_densities(vae, zs, x)
    log_ratio = q.log_prob(zs.double()) - (prior + lik).double()  # (S*C, B)
    log_px = -(torch.logsumexp(log_ratio, 0) - math.log(log_ratio.shape[0]))
    return log_px, eval_draws, stats
