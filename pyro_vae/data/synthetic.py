"""Synthetic data with a known model: samples of a random linear-Gaussian model
(:class:`~pyro_vae.data.linear_gaussian.LinearGaussian`), kept as the data set's ``truth`` so that
exact log p(x) is available."""

from __future__ import annotations

from pathlib import Path

from pyro_vae.components.registry import DATASETS
from pyro_vae.data.datasets import Dataset
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.hardware import check_fits_in_memory


@DATASETS.register("synthetic")
def synthetic(
    *, root: Path, download: bool, n_train: int = 1000, n_test: int = 200, x_dim: int = 5, z_dim: int = 2, noise_std: float = 0.5, seed: int = 0
) -> Dataset:
    """Samples of a linear-Gaussian model with known parameters (exact log p(x) is available).
    ``n_train``/``n_test`` are the data section's sizes: that many points are drawn, and a smaller
    size draws the first points of a larger one."""
    if min(x_dim, z_dim) < 1 or not noise_std > 0:
        raise ValueError(f"synthetic data needs x_dim and z_dim >= 1 and noise_std > 0, not {x_dim}, {z_dim}, {noise_std}")
    # float64 draws and their float32 copies, before anything is allocated
    check_fits_in_memory(12 * (n_train + n_test) * (x_dim + z_dim), f"{n_train} + {n_test} synthetic points",
                         "lower data.n_train or data.n_test")
    truth = LinearGaussian.random(x_dim, z_dim, noise_std, seed)
    xtr, _ = truth.sample(n_train, seed + 1)
    xte, _ = truth.sample(n_test, seed + 2)
    return Dataset("synthetic", xtr.float(), xte.float(), (x_dim,), info={"model": "linear-gaussian", "seed": seed}, truth=truth)
