"""A run folder and what is done with it after training: loading the trained model without an
optimizer (:mod:`~pyro_vae.runs.load`), its records (:mod:`~pyro_vae.runs.records`), log p(x)
estimates (:mod:`~pyro_vae.runs.evaluate`), samples, plots, ``pyro-vae show`` and ``compare``."""
