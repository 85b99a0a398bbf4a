"""A run folder and what is done with it: its checkpoint file (:mod:`~pyro_vae.runs.checkpoint`)
and records (:mod:`~pyro_vae.runs.records`), loading the trained model without an optimizer
(:mod:`~pyro_vae.runs.load`), log p(x) estimates (:mod:`~pyro_vae.runs.evaluate`), samples, plots,
``pyro-vae show`` and ``pyro-vae compare``."""
