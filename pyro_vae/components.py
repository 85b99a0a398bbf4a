"""Import every module that registers components, so that the registries are complete."""

from . import baselines, datasets, guides, likelihoods, networks, objectives, optim, priors  # noqa: F401
