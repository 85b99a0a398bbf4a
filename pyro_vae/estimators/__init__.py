"""log p(x) estimators. Each reaches the model and guide only through Pyro traces
(:mod:`pyro_vae.traces`), so every prior, likelihood and guide of the registry works with all."""

from .active_units import active_units
from .ais import ais, bdmc, beta_schedule
from .appendix_d import hmc_marginal_likelihood
from .exact import exact_log_px, exact_vae, linear_gaussian_of
from .gaps import gap_report, optimise_local_gaussians
from .hmc import BatchedHMC, chain_diagnostics, to_inference_data
from .iwae import elbo, iwae, plan_chunks
from .result import Estimate

__all__ = [
    "active_units", "ais", "bdmc", "beta_schedule", "hmc_marginal_likelihood", "exact_log_px", "exact_vae",
    "linear_gaussian_of", "gap_report", "optimise_local_gaussians", "BatchedHMC", "chain_diagnostics",
    "to_inference_data", "elbo", "iwae", "plan_chunks", "Estimate",
]
