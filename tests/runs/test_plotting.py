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
