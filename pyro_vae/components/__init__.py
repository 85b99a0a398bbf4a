"""The parts a config names: priors, likelihoods, guides and networks, each registered under a
name in :mod:`~pyro_vae.components.registry` (which also holds the registries of objectives,
optimizers and data sets). Importing this package registers every built-in component.
"""

from pyro_vae.components import guides, likelihoods, networks, priors  # noqa: F401  (registers the entries)
from pyro_vae.components.registry import DATASETS, GUIDES, LIKELIHOODS, NETWORKS, OBJECTIVES, OPTIMIZERS, PRIORS, Registry

__all__ = ["DATASETS", "GUIDES", "LIKELIHOODS", "NETWORKS", "OBJECTIVES", "OPTIMIZERS", "PRIORS", "Registry"]
