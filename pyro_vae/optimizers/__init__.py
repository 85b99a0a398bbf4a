"""Optimizers by name (``optimizer: {name: adagrad, lr: 0.02}``) and learning-rate schedules.

:mod:`~pyro_vae.optimizers.inplace` holds the in-place Adagrad, Adam and SGD that step every
parameter in one call (``pyro.optim`` runs one torch optimizer per parameter);
:mod:`~pyro_vae.optimizers.builders` registers them in ``OPTIMIZERS``. Importing this package
registers them.
"""

from pyro_vae.optimizers.builders import build_optimizer, build_scheduler
from pyro_vae.optimizers.inplace import SGD, Adagrad, Adam

__all__ = ["SGD", "Adagrad", "Adam", "build_optimizer", "build_scheduler"]
