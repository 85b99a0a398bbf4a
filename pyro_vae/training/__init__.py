"""Training a run: the loop, its metrics and its exact resume (:mod:`~pyro_vae.training.trainer`)."""
