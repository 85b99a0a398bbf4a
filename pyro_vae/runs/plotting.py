"""Pictures of a run: ELBO curves, samples, reconstructions, the 2-D latent manifold (AEVB Fig. 4)
and a latent scatter coloured by label. All written as PNG files with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyro_vae.model import VAE  # noqa: E402
from pyro_vae.runs.records import read_metrics  # noqa: E402
from pyro_vae.user_numbers import count

# A grid of 50 x 50 MNIST digits is 1400 pixels wide; beyond that a picture is no way to look at
# samples (``pyro-vae sample`` writes more as an array).
MAX_PICTURE_SAMPLES = 2500
DPI = 120


def is_image(vae: VAE) -> bool:
    """Whether the model's data can be drawn as images (grey or colour)."""
    return vae.image_shape is not None


def image_grid(images: torch.Tensor, image_shape: Tuple[int, int, int], nrow: int) -> torch.Tensor:
    """Tile ``(n, x_dim)`` images of ``(channels, height, width)`` into one array, ``(H*rows,
    W*nrow)`` for grey images and ``(H*rows, W*nrow, 3)`` for colour ones (blank cells are zero)."""
    c, h, w = image_shape
    n = images.shape[0]
    rows = (n + nrow - 1) // nrow
    grid = torch.zeros(rows * h, nrow * w, c)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = images[i].reshape(c, h, w).permute(1, 2, 0).clamp(0, 1)
    return grid[..., 0] if c == 1 else grid


def _save_image(grid: torch.Tensor, path: Path, title: str) -> Path:
    # at least one output pixel per grid pixel (a fixed 6-inch figure would blur grids wider than
    # about 550 pixels); the axes take about three quarters of the figure's width
    width = max(6.0, grid.shape[1] / (0.75 * DPI))
    fig, ax = plt.subplots(figsize=(width, width * grid.shape[0] / max(grid.shape[1], 1)))
    ax.imshow(grid.cpu().numpy(), cmap="gray" if grid.dim() == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _measured(row: dict, *keys: str) -> bool:
    """Whether a metrics.csv row holds a value for each of ``keys`` (an epoch without a test
    evaluation, or an older file without the column, reads as "nan" or is missing)."""
    return all(row.get(key) not in (None, "", "nan") for key in keys)


def plot_curves(metrics_csv: Path, path: Path) -> Path:
    """The train and test ELBO against training samples seen (AEVB Fig. 2's axes), from metrics.csv."""
    rows, _ = read_metrics(metrics_csv)
    samples = [float(r["samples_seen"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (("train_elbo", "train ELBO", "-"), ("test_elbo", "test ELBO", "o-")):
        points = [(s, float(r[key])) for s, r in zip(samples, rows) if _measured(r, key)]
        if points:
            ax.plot(*zip(*points), style, label=label)
    # the test ELBO's +- 2 standard errors over the test points, where metrics.csv has them
    band = [(s, float(r["test_elbo"]), float(r["test_elbo_stderr"])) for s, r in zip(samples, rows)
            if _measured(r, "test_elbo", "test_elbo_stderr")]
    if band:
        seen, means, errors = zip(*band)
        ax.fill_between(seen, [m - 2 * e for m, e in zip(means, errors)], [m + 2 * e for m, e in zip(means, errors)], color="C1", alpha=0.2,
                        linewidth=0, label="test ELBO +- 2 s.e.")
    ax.set_xscale("log")
    ax.set_xlabel("training samples evaluated")
    ax.set_ylabel("ELBO per datapoint (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def picture_formats() -> List[str]:
    """File extensions (without the dot) that matplotlib can save a figure as."""
    return sorted(matplotlib.figure.Figure().canvas.get_supported_filetypes())


def why_not_drawn(vae: VAE, needs_2d_latents: bool = False) -> Optional[str]:
    """Why a picture of this model cannot be drawn (None if it can): the data are not images, or
    (for the manifold) the latent space is not 2-D."""
    if not is_image(vae):
        return f"the data (shape {tuple(vae.x_shape)}) are not images"
    if needs_2d_latents and vae.z_dim != 2:
        return f"the latent space has {vae.z_dim} dimensions and the manifold needs 2 (model.z_dim=2)"
    return None


@torch.no_grad()
def plot_samples(vae: VAE, path: Path, n: int = 100, nrow: int = 10) -> Optional[Path]:
    """A grid of ``n`` means E[x | z], z ~ p(z) (AEVB Fig. 5); None where the data are no images."""
    n, nrow = count("n", n), count("nrow", nrow)
    if why_not_drawn(vae):
        return None
    return _save_image(image_grid(vae.sample_means(n).cpu(), vae.image_shape, nrow), path, f"samples (E[x|z], z ~ p(z)), Nz={vae.z_dim}")


@torch.no_grad()
def plot_reconstructions(vae: VAE, x: torch.Tensor, path: Path, n: int = 10) -> Optional[Path]:
    """The first ``n`` points of ``x`` above E[x | z] at the guide's mean z; None where they are no images."""
    n = count("n", n)
    if why_not_drawn(vae):
        return None
    x = x[:n]
    both = torch.cat([x.cpu(), vae.reconstruct(x).cpu()])
    return _save_image(image_grid(both, vae.image_shape, n), path, "data (top) and reconstructions (bottom)")


@torch.no_grad()
def plot_manifold(vae: VAE, path: Path, n: int = 20) -> Optional[Path]:
    """AEVB Fig. 4: a linearly spaced grid on the unit square mapped through the inverse Gaussian
    CDF to z, with the decoder mean drawn at each point (only for z_dim = 2)."""
    n = count("n", n)
    if why_not_drawn(vae, needs_2d_latents=True):
        return None
    device = next(vae.parameters()).device
    u = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device=device)
    z1 = torch.distributions.Normal(0.0, 1.0).icdf(u)
    z = torch.stack(torch.meshgrid(z1, z1.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)
    return _save_image(image_grid(vae.decode_means(z).cpu(), vae.image_shape, n), path, "learned 2-D manifold")


@torch.no_grad()
def plot_latents(vae: VAE, x: torch.Tensor, y: Optional[torch.Tensor], path: Path, n: int = 5000) -> Path:
    """Means of q(z|x) for test points (first two principal axes if z_dim > 2), coloured by label."""
    n = count("n", n)
    q = vae.encode(x[:n])
    try:
        z = q.mean
    except NotImplementedError:
        z = q.sample()
    z = z.cpu()
    if z.shape[1] > 2:
        zc = z - z.mean(0)
        _, _, v = torch.pca_lowrank(zc, q=2, center=False)
        z = zc @ v[:, :2]
    elif z.shape[1] == 1:
        z = torch.cat([z, torch.zeros_like(z)], 1)
    fig, ax = plt.subplots(figsize=(5, 5))
    c = None if y is None else y[:n].cpu().numpy()
    colours = {} if c is None else {"c": c, "cmap": "tab10"}  # unlabelled data: one colour
    sc = ax.scatter(z[:, 0].numpy(), z[:, 1].numpy(), s=3, **colours)
    if c is not None:
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_title("E_q[z|x] on test data" + (" (PCA)" if vae.z_dim > 2 else ""))
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_run(run_dir: Path, vae: VAE, x_test: torch.Tensor, y_test: Optional[torch.Tensor]) -> Tuple[List[Path], Dict[str, str]]:
    """Every picture that applies to this run, written into ``run_dir/plots``; returns the files
    written and, for each picture left out, why."""
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    metrics = Path(run_dir) / "metrics.csv"
    if metrics.exists():
        written.append(plot_curves(metrics, out / "elbo_curves.png"))
    for p in (
        plot_samples(vae, out / "samples.png"),
        plot_reconstructions(vae, x_test, out / "reconstructions.png"),
        plot_manifold(vae, out / "manifold.png"),
        plot_latents(vae, x_test, y_test, out / "latents.png"),
    ):
        if p is not None:
            written.append(p)
    not_images, not_2d = why_not_drawn(vae), why_not_drawn(vae, needs_2d_latents=True)
    reasons = {"samples.png": not_images, "reconstructions.png": not_images, "manifold.png": not_2d}
    skipped = {name: why for name, why in reasons.items() if why}
    return written, skipped
