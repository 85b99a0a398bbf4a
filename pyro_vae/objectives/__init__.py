"""Training objectives, one per module, each registered in ``OBJECTIVES`` under the name a config
gives (``objective: {name: ...}``):

- :mod:`~pyro_vae.objectives.elbo`: ``trace``, ``trace_meanfield`` and their ``jit_*`` variants
  (AEVB estimators A and B), computed by :mod:`~pyro_vae.objectives.trace_elbo`;
- :mod:`~pyro_vae.objectives.iwae`: ``iwae`` (Burda et al. 2015);
- :mod:`~pyro_vae.objectives.wake_sleep`: ``wake_sleep`` and ``rws``;
- :mod:`~pyro_vae.objectives.mcem`: ``mcem``.

Importing this package registers them all.
"""

from pyro_vae.objectives import elbo, iwae, mcem, wake_sleep  # noqa: F401  (registers the entries)
from pyro_vae.components.registry import OBJECTIVES
from pyro_vae.objectives.base import Objective, clear_pyro_state

__all__ = ["OBJECTIVES", "Objective", "clear_pyro_state"]
