"""Every example of the paper's experiments runs end to end on a tiny budget and tiny data."""

import argparse
import csv
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_vae.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # the scripts share examples/experiments.py, as when run from there


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tiny_images(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x=(rng.random((60, 28, 28)) < 0.2).astype(np.float32))
    return f"{{name: npz, path: {tmp_path / 'img.npz'}, binarize: none}}"


SMALL = ["model.encoder.hidden=[8]", "model.decoder.hidden=[8]", "training.batch_size=20"]  # minibatches of the tiny data sets


def _rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fig2(tmp_path, tiny_images, monkeypatch):
    import matplotlib.axes

    bands = []  # each test-ELBO curve is shaded by +- 2 standard errors
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", lambda self, x, low, high, **kw: bands.append((list(x), low, high)))
    _load("fig2_lower_bound").main(argparse.Namespace(dataset="mnist", budget=100, z_dims=[2, 3], methods=["aevb", "wake_sleep"],
                                                      out=str(tmp_path), seed=0, data=tiny_images, set=SMALL, step_sizes=[]))
    rows = _rows(tmp_path / "fig2_mnist.csv")
    assert {r["method"] for r in rows} == {"aevb", "wake_sleep"} and {r["z_dim"] for r in rows} == {"2", "3"}
    assert all(r["train_elbo"] != "nan" and r["test_elbo"] != "nan" and float(r["test_elbo_stderr"]) > 0 for r in rows)
    assert (tmp_path / "fig2_mnist.png").exists() and "| aevb | 2 |" in (tmp_path / "fig2_mnist.md").read_text()
    assert len(bands) == 4  # 2 methods x 2 latent sizes
    aevb_2 = [r for r in rows if r["method"] == "aevb" and r["z_dim"] == "2"]
    assert [int(r["samples_seen"]) for r in aevb_2] == list(bands[0][0])
    assert [float(r["test_elbo"]) - 2 * float(r["test_elbo_stderr"]) for r in aevb_2] == pytest.approx(list(bands[0][1]))


def test_fig2_goes_further_from_where_a_smaller_budget_stopped(tmp_path, tiny_images):
    """Run again with a larger --budget into the same --out, each run resumes from its checkpoint:
    the first invocation's epochs stay as they were and training goes on from there."""
    fig2 = _load("fig2_lower_bound")
    args = dict(dataset="mnist", z_dims=[2], methods=["aevb"], out=str(tmp_path), seed=0, data=tiny_images, set=SMALL, step_sizes=[])
    fig2.main(argparse.Namespace(budget=100, **args))
    metrics = tmp_path / "runs" / "fig2_mnist_aevb_z2" / "metrics.csv"
    first = _rows(metrics)
    fig2.main(argparse.Namespace(budget=250, **args))
    both = _rows(metrics)
    assert both[: len(first)] == first and len(both) > len(first)
    assert [int(r["epoch"]) for r in both] == list(range(1, len(both) + 1))
    assert int(both[-1]["samples_seen"]) >= 250 > int(first[-1]["samples_seen"])
    assert [int(r["samples_seen"]) for r in _rows(tmp_path / "fig2_mnist.csv")] == [int(r["samples_seen"]) for r in both]


def test_fig2_chooses_each_methods_step_size_by_pilot_runs_and_marks_the_papers_values(tmp_path, tiny_images, monkeypatch):
    """The paper's protocol: a pilot run at each candidate step size, the best training bound kept
    and named in the figure's notes; the paper's final values drawn as points."""
    import matplotlib.axes

    real_plot, marked = matplotlib.axes.Axes.plot, []

    def plot(self, *args, **kwargs):
        if kwargs.get("label", "").endswith("paper"):
            marked.append((args[0][0], args[1][0]))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    fig2 = _load("fig2_lower_bound")
    fig2.main(argparse.Namespace(dataset="mnist", budget=80, z_dims=[3], methods=["aevb"], out=str(tmp_path), seed=0,
                                 data=tiny_images, set=SMALL, step_sizes=[0.01, 0.1], pilot_budget=40))
    notes = (tmp_path / "fig2_mnist.md").read_text()
    chosen = float(re.search(r"Step size of aevb, Nz = 3: ([0-9.]+) \(train bound after 40 samples at each: 0.01: -?[0-9.]+, 0.1: -?[0-9.]+\)",
                             notes).group(1))
    assert chosen in (0.01, 0.1) and (tmp_path / "runs" / "fig2_mnist_aevb_z3_pilot_lr0.1" / "checkpoint.pt").exists()
    assert "lr: " + str(chosen) in (tmp_path / "runs" / "fig2_mnist_aevb_z3" / "config.yaml").read_text()
    assert marked == [(fig2.PAPER_SAMPLES, -134.0)]


def test_fig3(tmp_path, tiny_images):
    _load("fig3_marginal_likelihood").main(argparse.Namespace(budget=100, n_train=[40], methods=["aevb", "wake_sleep", "mcem"],
                                                              eval_points=5, per_decade=2, hmc_samples=3, k=5, out=str(tmp_path), seed=0,
                                                              data=tiny_images, set=SMALL, step_sizes=[]))
    rows = _rows(tmp_path / "fig3.csv")
    assert {r["method"] for r in rows} == {"aevb", "wake_sleep", "mcem"}
    assert {r["estimator"] for r in rows} == {"hmc", "iwae"} and {r["split"] for r in rows} == {"train", "test"}
    assert (tmp_path / "fig3.png").exists() and (tmp_path / "fig3.md").exists()
    # HMC rows count the points whose chains disagree (R-hat), IWAE rows leave it empty; the table shows it
    assert all(r["rhat_above"].isdigit() and 0 <= int(r["rhat_above"]) <= 5 for r in rows if r["estimator"] == "hmc")
    assert all(r["rhat_above"] == "" for r in rows if r["estimator"] == "iwae")
    table = (tmp_path / "fig3.md").read_text()
    assert "| stderr | minus_aevb | rhat_above | minus_iwae |" in table
    # the baselines' log p(x) minus AEVB's on the same points, with its paired error; AEVB's own rows leave it empty
    checked = 0
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 10 and cells[1] in ("aevb", "wake_sleep", "mcem"):
            checked += 1
            assert (cells[7] == "") is (cells[1] == "aevb"), line
            # HMC rows carry their difference to the IWAE bound on the same points, paired
            hmc, iwae = (read_json_rows(tmp_path, cells[1], cells[2], est) for est in ("hmc", "iwae"))
            if cells[3] == "hmc":
                assert cells[9].startswith(f"{sum(h - i for h, i in zip(hmc, iwae)) / 5:+.2f} +- "), line
            else:
                assert cells[9] == "", line
            if cells[1] != "aevb":
                mine, aevb = (read_json_rows(tmp_path, method, cells[2], cells[3]) for method in (cells[1], "aevb"))
                diffs = [b - a for a, b in zip(aevb, mine)]
                assert cells[7].startswith(f"{sum(diffs) / 5:+.2f} +- "), line
    assert checked == 3 * 2 * 2  # methods x splits x estimators
    # the evaluations saved beside each run are read back when the script is run again
    fig3 = _load("fig3_marginal_likelihood")
    saved = tmp_path / "runs" / "fig3_n40_aevb" / "fig3_rows.json"
    saved_rows = fig3.read_saved_rows(saved)
    assert all(len(r["per_datapoint"]) == 5 for r in saved_rows)  # every point's log p(x), for the paired column
    assert [{k: v for k, v in r.items() if k != "per_datapoint"} for r in saved_rows] == [r for r in _saved_rows(rows) if r["method"] == "aevb"]
    saved.write_text('[{"n_train": 40, "method": "aevb", "samples_')  # a write cut short (older versions)
    with pytest.raises(ConfigError, match=r"fig3_rows.json does not hold Figure 3's saved evaluations .*delete it to go on"):
        fig3.read_saved_rows(saved)


def read_json_rows(out, method, split, estimator):
    """The per-point log p(x) of a Fig. 3 run's last evaluation of ``split`` by ``estimator``."""
    import json

    rows = json.loads((out / "runs" / f"fig3_n40_{method}" / "fig3_rows.json").read_text())
    return [r for r in rows if (r["split"], r["estimator"]) == (split, estimator)][-1]["per_datapoint"]


def _saved_rows(csv_rows):
    """fig3.csv's rows as the script saved them in JSON (numbers as numbers)."""
    def value(key, v):
        if key in ("method", "split", "estimator") or v == "":
            return v
        return int(v) if key in ("n_train", "samples_seen", "rhat_above") else float(v)

    return [{k: value(k, v) for k, v in r.items()} for r in csv_rows]


def test_wake_sleep_study(tmp_path, tiny_images):
    """Every variant trains, its early look and final scores are tabled with the paired difference to
    AEVB, and a second invocation reads the saved scores instead of evaluating again."""
    study = _load("wake_sleep_study")
    args = argparse.Namespace(budget=80, early=20, z_dim=2, variants=list(study.VARIANTS), n=6, k=4, out=str(tmp_path), seed=0,
                              data=tiny_images, set=SMALL)
    study.main(args)
    rows = {r["variant"]: r for r in _rows(tmp_path / "wake_sleep_study.csv")}
    assert set(rows) == set(study.VARIANTS)
    for name, r in rows.items():
        assert int(r["samples_seen"]) == 94 and 0 < float(r["q_std_early"]) and 0 < float(r["q_std_dreams_early"])
        assert 0 <= float(r["dream_ones_early"]) <= 1
        assert float(r["log_px"]) >= float(r["test_elbo"]) - 3 * float(r["log_px_stderr"])  # IWAE-4 above the ELBO, up to noise
        assert (r["minus_aevb"] == "") is (name == "aevb")
    assert rows["lr0.01"]["lr"] == "0.01" and rows["paper"]["lr"] == "0.02"
    early = tmp_path / "runs" / "ws_study_paper_first20" / "metrics.csv"
    assert int(_rows(early)[-1]["samples_seen"]) == 20
    # the annealed variant's step size falls to a tenth over the budget (2 epochs of the 54 training points)
    assert study.annealing_rate(80, 20) == pytest.approx(0.1 ** 0.25)
    config = (tmp_path / "runs" / "ws_study_annealed" / "config.yaml").read_text()
    assert f"gamma: {0.1 ** 0.5}" in config and "name: exponential" in config
    # the dream batch reaches the objective
    assert "dream_batch_size: 1000" in (tmp_path / "runs" / "ws_study_dreams10x" / "config.yaml").read_text()
    before = (tmp_path / "wake_sleep_study.md").read_text()
    study.estimators = None  # a second invocation evaluates nothing: the saved scores are read back
    study.main(args)
    assert (tmp_path / "wake_sleep_study.md").read_text() == before


def test_fig4_and_fig5(tmp_path, tiny_images):
    _load("fig4_manifolds").main(argparse.Namespace(datasets=["mnist"], budget=60, grid=4, out=str(tmp_path / "f4"), seed=0,
                                                    data=tiny_images, set=SMALL))
    assert (tmp_path / "f4" / "fig4_mnist.png").exists() and (tmp_path / "f4" / "fig4.md").exists()
    _load("fig5_samples").main(argparse.Namespace(config="aevb_mnist", z_dims=[2, 5], budget=60, n=4,
                                                  out=str(tmp_path / "f5"), seed=0, data=tiny_images, set=SMALL))
    assert (tmp_path / "f5" / "fig5_z5.png").exists() and len(_rows(tmp_path / "f5" / "fig5.csv")) >= 2


@pytest.mark.parametrize("script", ["fig2_lower_bound", "fig3_marginal_likelihood", "fig4_manifolds", "fig5_samples", "wake_sleep_study"])
def test_example_flags_are_checked_before_any_training(tmp_path, script):
    """A file where the output folder should go, or a count below one, stops the script at once."""
    import subprocess
    import sys

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    run = lambda *flags: subprocess.run([sys.executable, str(ROOT / "examples" / f"{script}.py"), *flags],  # noqa: E731
                                        capture_output=True, text=True, cwd=ROOT, timeout=120)
    done = run("--out", str(blocker / "results"))
    assert done.returncode == 2 and f"{blocker} is a file, not a folder" in done.stderr
    done = run("--budget", "0")
    assert done.returncode == 2 and "argument --budget: expected a finite number > 0, got '0'" in done.stderr


@pytest.mark.parametrize("script", ["fig2_lower_bound", "fig3_marginal_likelihood", "fig4_manifolds", "fig5_samples", "wake_sleep_study",
                                    "own_model"])
def test_examples_refuse_a_bad_device_flag(script, monkeypatch, capsys):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", [script, "--device", "tpu"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "examples" / f"{script}.py"), run_name="__main__")
    assert exit_.value.code == 2 and "argument --device: expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_example_device_flag_reaches_the_runs_config(tmp_path, tiny_images, monkeypatch):
    import runpy
    import sys

    import pyro_vae.speed.allocator

    monkeypatch.setattr(pyro_vae.speed.allocator, "keep_freed_memory", lambda: "not applied")  # leave this process's malloc alone
    argv = ["fig4_manifolds", "--datasets", "mnist", "--budget", "60", "--grid", "3", "--out", str(tmp_path), "--data", tiny_images,
            "--device", "cpu"] + [a for s in SMALL for a in ("--set", s)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "examples" / "fig4_manifolds.py"), run_name="__main__")
    assert "device: cpu" in (tmp_path / "runs" / "fig4_mnist" / "config.yaml").read_text()


def test_examples_report_a_bad_config_without_a_traceback(tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    import pyro_vae.speed.allocator

    monkeypatch.setattr(pyro_vae.speed.allocator, "keep_freed_memory", lambda: "not applied")
    missing = f"{{name: npz, path: {tmp_path / 'none.npz'}}}"
    monkeypatch.setattr(sys, "argv", ["fig2_lower_bound", "--budget", "50", "--z-dims", "2", "--out", str(tmp_path), "--data", missing])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "examples" / "fig2_lower_bound.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("fig2_lower_bound.py: error: ") and "none.npz does not exist" in err


@pytest.mark.parametrize("data,message", [
    ("[1, 2]", "--data must be a YAML mapping"),
    ("{name: [", "--data '{name: \\[' is not valid YAML"),
])
def test_a_bad_data_mapping_is_a_config_error(data, message):
    import experiments as X

    from pyro_vae.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        X.variant("aevb_mnist", [], data)


def test_a_run_that_diverges_ends_at_its_last_good_checkpoint_and_the_sweep_goes_on(tmp_path):
    import experiments as X
    import torch

    from pyro_vae.errors import TrainingError
    from pyro_vae.training.trainer import Trainer
    from tests.conftest import tiny_config

    def poison_after_epoch_2(trainer, row):
        if trainer.epoch == 2:
            with torch.no_grad():
                trainer.vae.decoder[0].weight.fill_(float("nan"))

    trainer = Trainer(tiny_config(training={"epochs": 4, "batch_size": 20}), tmp_path / "r", progress=False)
    with pytest.warns(UserWarning, match=r"run test stopped after 120 training samples \(epoch 2\): the loss became nan .*the other runs go on"):
        reason = X.train_to_end(trainer, on_epoch_end=poison_after_epoch_2)
    assert reason.startswith("stopped after 120 training samples (epoch 2): the loss became nan")
    assert trainer.epoch == 2 and all(bool(torch.isfinite(p).all()) for p in trainer.vae.parameters())  # the last good state
    assert X.stopped_notes({"a": None, "b": reason}) == [f"Stopped early, shown up to there: b {reason}."]
    # with no checkpoint to fall back on, there is nothing to show: the error stands
    fresh = Trainer(tiny_config(training={"epochs": 2, "batch_size": 20}), tmp_path / "s", progress=False)
    with torch.no_grad():
        fresh.vae.decoder[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="no checkpoint had been written yet"):
        X.train_to_end(fresh)


def test_run_script_records_the_command_and_reports_errors_in_one_line(monkeypatch, capsys):
    import warnings

    import experiments as X

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # run_script sets pyro-vae's one-line format
    parser = argparse.ArgumentParser(prog="fig9.py")
    parser.add_argument("--budget", type=float, default=1e6)
    X.add_run_arguments(parser)
    seen = []
    monkeypatch.setattr("sys.argv", ["examples/fig9.py", "--budget", "1e4", "--set", "model.prior.name=vamp", "--device", "cpu"])
    X.run_script(seen.append, parser)
    args = seen[0]
    assert args.command == "python examples/fig9.py --budget 1e4 --set model.prior.name=vamp --device cpu"
    assert X.command_text(args, "fig9.py") == args.command and args.set == ["model.prior.name=vamp", "device=cpu"]
    assert X.command_text(argparse.Namespace(budget=100.0), "fig9.py", "--dataset frey") == "python examples/fig9.py --dataset frey --budget 100"

    def fails(_args):
        raise ConfigError("model.z_dim: must be > 0")

    with pytest.raises(SystemExit) as stop:
        X.run_script(fails, parser)
    assert stop.value.code == 2 and capsys.readouterr().err == "fig9.py: error: model.z_dim: must be > 0\n"


def test_own_model_scores_a_hand_written_model_beside_its_closed_form(tmp_path):
    """The script as typed: every estimator on the Student-t model, each within its noise of the
    exact log p(x), the guide's ELBO below it; a count below one or a blocked --out stops it at once."""
    import subprocess

    run = lambda *flags: subprocess.run([sys.executable, str(ROOT / "examples" / "own_model.py"), *flags],  # noqa: E731
                                        capture_output=True, text=True, cwd=ROOT, timeout=300)
    done = run("--n", "6", "--k", "300", "--ais-steps", "30", "--hmc-samples", "40", "--bdmc-points", "3", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = {r["estimator"]: r for r in _rows(tmp_path / "own_model.csv")}
    assert list(rows)[0] == "exact (Student-t)" and len(rows) == 7
    for name in ("IWAE-300", "AIS, 30 steps", "App. D (HMC), 40 draws", "ELBO of q* (a Gaussian in log tau per point)"):
        difference = float(rows[name]["minus_exact"].split(" +- ")[0])
        assert abs(difference) < 0.2, (name, rows[name])
    assert float(rows["ELBO of the guide"]["minus_exact"].split(" +- ")[0]) < -0.5
    assert "Command: `python" in (tmp_path / "own_model.md").read_text()
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    done = run("--out", str(blocker / "results"))
    assert done.returncode == 2 and f"{blocker} is a file, not a folder" in done.stderr
    done = run("--k", "0")
    assert done.returncode == 2 and "argument --k: expected a whole number >= 1, got '0'" in done.stderr
