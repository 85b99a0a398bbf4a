"""Batched Hamiltonian Monte Carlo: one kernel for many independent chains with per-chain step
sizes (:mod:`~pyro_vae.mcmc.hmc`), and the potentials it runs on, read from Pyro traces of the
model and guide (:mod:`~pyro_vae.mcmc.potentials`). Used by AIS, the AEVB Appendix D estimator and
MCEM's E-step."""

from pyro_vae.mcmc.hmc import BatchedHMC, chain_diagnostics, to_inference_data

__all__ = ["BatchedHMC", "chain_diagnostics", "to_inference_data"]
