"""log p(x) estimators. Each reaches the model and guide only through Pyro traces
(:mod:`pyro_vae.traces`), so every prior, likelihood and guide of the registry works with all, and
so does a Pyro model of your own: ``iwae(model, guide, x, k=5000)``, ``ais``, ``bdmc`` and
``hmc_marginal_likelihood`` take ``model(x)`` and ``guide(x)`` as they take a trained VAE
(:class:`~pyro_vae.programs.PyroModel` says what they need of them)."""

from pyro_vae.estimators.active_units import active_units
from pyro_vae.estimators.ais import ais, bdmc, beta_schedule
from pyro_vae.estimators.appendix_d import hmc_marginal_likelihood
from pyro_vae.estimators.exact import exact_log_px, exact_vae, linear_gaussian_of
from pyro_vae.estimators.gaps import gap_report, optimise_local_gaussians
from pyro_vae.mcmc.hmc import BatchedHMC, chain_diagnostics, to_inference_data
from pyro_vae.estimators.iwae import elbo, iwae, plan_chunks
from pyro_vae.estimators.result import Estimate
from pyro_vae.programs import PyroModel

__all__ = [
    "active_units", "ais", "bdmc", "beta_schedule", "hmc_marginal_likelihood", "exact_log_px", "exact_vae",
    "linear_gaussian_of", "gap_report", "optimise_local_gaussians", "BatchedHMC", "chain_diagnostics",
    "to_inference_data", "elbo", "iwae", "plan_chunks", "Estimate", "PyroModel",
]
