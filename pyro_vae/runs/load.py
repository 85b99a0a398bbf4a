"""A trained run loaded from its folder for evaluation, sampling and plotting: its config, data and
model with the checkpoint's weights. No optimizer, schedule or objective state is built."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pyro
import torch

from pyro_vae import distributed
from pyro_vae.config import RunConfig, load as load_config
from pyro_vae.config.build import dataset_from_config, objective_from_config, vae_from_config
from pyro_vae.data.datasets import Dataset
from pyro_vae.errors import CheckpointError, DataError, not_a_run_folder
from pyro_vae.hardware import resolve_device
from pyro_vae.model import VAE, set_validation
from pyro_vae.runs.records import CONFIG_NAME, config_changes, data_changes
from pyro_vae.runs.checkpoint import CHECKPOINT_NAME, load_checkpoint

@dataclass
class TrainedRun:
    """A run folder's trained model. ``vae`` holds the checkpoint's weights on ``device``, in eval
    mode; ``x_train``/``x_test`` are the data as the model saw them (test binarized), on the device.
    The model registers its parameters in Pyro's param store, so it also trains under a user's own
    ``pyro.infer.SVI`` and works with ``Predictive``."""

    run_dir: Path
    config: RunConfig
    data: Dataset
    vae: VAE
    device: torch.device
    epoch: int
    samples_seen: int
    dist: distributed.DistInfo

    @property
    def x_train(self) -> torch.Tensor:
        return self.data.x_train.to(self.device)

    @property
    def x_test(self) -> torch.Tensor:
        return self.data.x_test.to(self.device)

    @property
    def trains_guide(self) -> bool:
        """Whether the run's objective trained q(z|x) (MCEM's does not: bounds drawn from it are
        loose). Read from the objective itself, so an objective of the user's own answers too; the
        objective is a small object of settings, built without the model."""
        return objective_from_config(self.config.objective).trains_guide


def load_run(run_dir: Path | str, device: Optional[str] = None, data: Optional[Dataset] = None) -> TrainedRun:
    """Rebuild a trained run's model and data from its folder, refusing a folder whose config.yaml
    was edited after training or whose data changed since (its log p(x) would describe another
    model or other data).

    :param device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default: the run's config).
    :param data: an already-loaded data set to use instead of the config's (tests, examples).
    """
    if not isinstance(run_dir, (str, os.PathLike)):
        raise CheckpointError(f"load_run takes a run folder's path (a str or pathlib.Path), got {run_dir!r}")
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_NAME
    if not cfg_path.exists():
        raise not_a_run_folder(run_dir)
    config = load_config(cfg_path, [f"device={device}"] if device else [])
    dist = distributed.from_env()
    target = resolve_device(config.device)
    if dist.enabled and target.type == "cuda":
        target = torch.device("cuda", dist.local_rank)
    distributed.init(dist, target)  # torchrun: evaluation shards its points over the ranks
    set_validation(config.training.validate_distributions)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    edited = config_changes(state.get("config"), config)
    if edited:
        listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} in config.yaml" for k, (old, new) in edited.items())
        raise CheckpointError(
            f"{cfg_path} no longer describes the model its checkpoint holds ({listed}): it was edited after "
            "training. Put those settings back (only training length, logging, checkpointing, device, "
            "data.root and evaluation may differ), or train a new run with the new ones."
        )
    loaded = data if data is not None else dataset_from_config(config.data)
    changed = data_changes(run_dir, loaded.info, state)
    if changed and data is None:
        listed = "; ".join(f"{split}: {old} -> {new}" for split, (old, new) in changed.items())
        raise DataError(
            f"the data of {run_dir} is not what it was trained with ({listed}; source "
            f"{loaded.info.get('source', config.data.name)}): the data file or its source changed "
            "since. Restore the original data, or train a new run on the new data; its log p(x) would not be "
            "comparable."
        )
    pyro.clear_param_store()  # pyro.module would otherwise hand the model parameters left by another
    torch.manual_seed(config.seed)  # as training starts: layers initialise before the weights are replaced
    vae = vae_from_config(config.model, loaded.x_shape)
    try:
        vae.load_state_dict(state["vae"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"the checkpoint in {run_dir} does not fit its config.yaml's model ({e}); restore the run's own files or retrain."
        ) from e
    broken = [name for name, value in state["vae"].items() if torch.is_tensor(value) and value.is_floating_point()
              and not bool(torch.isfinite(value).all())]
    if broken:
        raise CheckpointError(
            f"the checkpoint in {run_dir} holds weights that are not finite ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}): no log p(x), sample or plot can be made from it. Retrain, or restore "
            "an earlier checkpoint."
        )
    vae.to(target).eval()
    return TrainedRun(run_dir, config, loaded, vae, target, int(state["epoch"]), int(state["samples_seen"]), dist)
