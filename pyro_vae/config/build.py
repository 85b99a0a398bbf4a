"""A run's objects from its config: the VAE, the data set, the objective, the optimizer and its
schedule, each built through its registry."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from pyro_vae.components.registry import OBJECTIVES
from pyro_vae.config.schema import DataConfig, ModelConfig, ObjectiveConfig, OptimizerConfig
from pyro_vae.data.datasets import Dataset, load_dataset
from pyro_vae.model import VAE, build_vae
from pyro_vae.objectives.base import Objective
from pyro_vae.optimizers.builders import build_optimizer, build_scheduler


def vae_from_config(model: ModelConfig, x_shape: Tuple[int, ...]) -> VAE:
    """The VAE that a config's ``model:`` section describes, for data of shape ``x_shape``."""
    parts = {part: {"name": getattr(model, part).name, **getattr(model, part).options}
             for part in ("prior", "likelihood", "guide", "encoder", "decoder")}
    return build_vae(x_shape, model.z_dim, **parts)


def dataset_from_config(data: DataConfig) -> Dataset:
    """The data set that a config's ``data:`` section describes, cut and binarized as it says."""
    return load_dataset(data.name, data.options, root=data.root, download=data.download, binarize_mode=data.binarize,
                        binarize_seed=data.binarize_seed, n_train=data.n_train, n_test=data.n_test)


def objective_from_config(objective: ObjectiveConfig) -> Objective:
    """The training objective of a config's ``objective:`` section."""
    return OBJECTIVES.build(objective.name, objective.options, returns=Objective)


def optimizer_from_config(
    optimizer: OptimizerConfig, params: List[torch.nn.Parameter], weight_prior_std: Optional[float]
) -> Tuple[torch.optim.Optimizer, Optional[torch.optim.lr_scheduler.LRScheduler]]:
    """The optimizer of a config's ``optimizer:`` section over ``params`` (with the objective's
    weight prior as weight decay), and its per-epoch schedule (None for ``none``)."""
    built = build_optimizer(optimizer.name, optimizer.options, params, weight_prior_std)
    return built, build_scheduler(built, **optimizer.schedule.model_dump())
