"""Hooks into a run: what happens at the end of each epoch and of each evaluation.

A callback is any object with ``on_epoch_end(trainer, row)`` and ``on_evaluation_end(result)``
(this class's methods do nothing, so a subclass overrides only what it needs), and ``close()``.
``Trainer(config, run_dir, callbacks=[...])`` calls ``on_epoch_end`` after each epoch's row is in
``metrics.csv`` (``row`` holds the same fields: ``epoch``, ``samples_seen``, ``train_elbo``,
``test_elbo``, ``lr``, ...); ``evaluate_run(..., callbacks=[...])`` calls ``on_evaluation_end``
with the result it wrote. ``TensorBoardLogger`` is the one that ships; ``logging.tensorboard`` in
a config, or ``--tensorboard DIR``, turns it on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import torch

from pyro_vae.errors import ConfigError
from pyro_vae.files import folder_path

# the metric fields written as TensorBoard scalars (NaN where an epoch did not measure one)
SCALARS = ("train_objective", "train_elbo", "test_elbo", "test_elbo_stderr", "lr", "epoch_seconds")


class Callback:
    """Does nothing at each hook; subclasses override the hooks they need."""

    def on_epoch_end(self, trainer: Any, row: Dict[str, Any]) -> None:
        """After an epoch: ``trainer`` (its ``vae``, ``x_test``, ``config``) and the epoch's metric row."""

    def on_evaluation_end(self, result: Dict[str, Any]) -> None:
        """After an evaluation: the result as written to its JSON file (``estimator``, ``value``, ...)."""

    def close(self) -> None:
        """At the end of training or evaluation."""


class TensorBoardLogger(Callback):
    """Scalars per epoch (against training samples seen), a grid of samples and one of test images
    beside their reconstructions for image data, and every log p(x) estimate, for TensorBoard
    (``tensorboard --logdir DIR``). Needs the ``tensorboard`` package: ``pip install
    "pyro-vae[tensorboard]"``."""

    def __init__(self, log_dir: Path | str, images: int = 64) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging needs the tensorboard package: pip install \"pyro-vae[tensorboard]\" "
                              "(or pip install tensorboard), or leave logging.tensorboard off.") from None
        self.log_dir = folder_path(log_dir, "the TensorBoard folder (logging.tensorboard, --tensorboard)")
        self.writer = SummaryWriter(str(self.log_dir))
        self.images = images

    def on_epoch_end(self, trainer: Any, row: Dict[str, Any]) -> None:
        step = int(row["samples_seen"])
        for key in SCALARS:
            value = row.get(key)
            if isinstance(value, (int, float)) and value == value:  # NaN: not measured this epoch
                self.writer.add_scalar(f"train/{key}", value, step)
        vae = trainer.vae
        shape = vae.image_shape
        if shape is not None:
            devices = [trainer.device] if trainer.device.type == "cuda" else []
            # drawn on a forked random stream: training goes on with the draws it would have had
            with torch.no_grad(), torch.random.fork_rng(devices=devices), vae.param_store_off():
                samples = vae.sample_means(self.images).reshape((-1,) + shape).clamp(0, 1).cpu()
                x = trainer.x_test[:8]
                recon = vae.decode_means(vae.encode(x).sample()).reshape((-1,) + shape).clamp(0, 1).cpu()
            self.writer.add_images("samples", samples, step)
            pairs = torch.stack([x.reshape(recon.shape).cpu(), recon], 1).reshape((-1,) + shape)
            self.writer.add_images("reconstructions (test image, then its reconstruction)", pairs, step)
        self.writer.flush()

    def on_evaluation_end(self, result: Dict[str, Any]) -> None:
        step = int(result.get("trained_samples") or 0)
        self.writer.add_scalar(f"log_px/{result['estimator']}_{result.get('split', 'test')}", result["value"], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
