"""Training a run: the loop (:mod:`~pyro_vae.training.trainer`) and its checkpoints
(:mod:`~pyro_vae.training.checkpoint`)."""
