"""The plots of a run."""

import pytest

from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config


def test_the_curves_plot_shades_the_test_elbo_by_its_standard_error(tmp_path, monkeypatch):
    import matplotlib.axes

    from pyro_vae.runs.plotting import plot_curves
    from pyro_vae.runs.records import read_metrics

    run = tmp_path / "r"
    Trainer(tiny_config(training={"epochs": 2}), run, progress=False).train()
    bands = []
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", lambda self, x, low, high, **kw: bands.append((list(x), low, high)))
    plot_curves(run / "metrics.csv", tmp_path / "curves.png")
    rows, _ = read_metrics(run / "metrics.csv")
    expected_low = [float(r["test_elbo"]) - 2 * float(r["test_elbo_stderr"]) for r in rows]
    assert len(bands) == 1 and bands[0][0] == [float(r["samples_seen"]) for r in rows]
    assert bands[0][1] == pytest.approx(expected_low) and all(h > lo for lo, h in zip(bands[0][1], bands[0][2]))


def test_grey_and_colour_images_are_tiled_and_vectors_are_not_drawn(tmp_path):
    import torch

    from pyro_vae.config.build import vae_from_config
    from pyro_vae.runs.plotting import image_grid, plot_samples, why_not_drawn

    grey = torch.arange(3 * 6, dtype=torch.float32).reshape(3, 6) / 17  # three 2 x 3 images
    grid = image_grid(grey, (1, 2, 3), nrow=2)
    assert grid.shape == (4, 6) and torch.equal(grid[:2, :3], grey[0].reshape(2, 3)) and torch.equal(grid[2:, 3:], torch.zeros(2, 3))
    colour = torch.rand(2, 3 * 2 * 2)  # two 2 x 2 RGB images, channels first as the data hold them
    grid = image_grid(colour, (3, 2, 2), nrow=2)
    assert grid.shape == (2, 4, 3) and torch.equal(grid[1, 2], colour[1].reshape(3, 2, 2)[:, 1, 0])
    model = tiny_config(model={"likelihood": {"name": "bernoulli"}}).model
    for x_shape, drawn in (((28, 28), True), ((1, 4, 4), True), ((3, 4, 4), True), ((6,), False), ((2, 4, 4), False)):
        vae = vae_from_config(model, x_shape)
        assert (vae.image_shape is not None) == drawn and (why_not_drawn(vae) is None) == drawn, x_shape
        assert (plot_samples(vae, tmp_path / "s.png", n=4, nrow=2) is not None) == drawn, x_shape


def test_the_pictures_take_counts_as_whole_numbers_and_name_anything_else(tmp_path):
    import torch

    from pyro_vae.config.build import vae_from_config
    from pyro_vae.runs.plotting import plot_latents, plot_manifold, plot_reconstructions, plot_samples
    from pyro_vae.runs.samples import write_sample_means

    vae = vae_from_config(tiny_config(model={"z_dim": 2, "likelihood": {"name": "bernoulli"}}).model, (1, 4, 4))
    x = torch.rand(8, 16).round()
    assert plot_samples(vae, tmp_path / "s.png", n=4e0, nrow=2.0).exists()
    assert write_sample_means(vae, tmp_path / "s.npy", n=1e1).exists()
    bad = [
        (lambda: plot_samples(vae, tmp_path / "a.png", n=0), r"n must be a whole number >= 1, got 0"),
        (lambda: plot_samples(vae, tmp_path / "a.png", n=4, nrow=1.5), r"nrow must be a whole number >= 1, got 1.5"),
        (lambda: plot_reconstructions(vae, x, tmp_path / "b.png", n=-1), r"n must be a whole number >= 1, got -1"),
        (lambda: plot_manifold(vae, tmp_path / "c.png", n=0), r"n must be a whole number >= 1, got 0"),  # a picture of nothing before
        (lambda: plot_latents(vae, x, None, tmp_path / "d.png", n=2.5), r"n must be a whole number >= 1, got 2.5"),  # a TypeError before
        (lambda: write_sample_means(vae, tmp_path / "e.npy", n=5, chunk=0), r"chunk must be a whole number >= 1, got 0"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            call()
