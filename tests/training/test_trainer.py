"""The training loop: exact resume, refused changes, divergence messages, budgets, metrics."""

import math
from pathlib import Path

import pytest
import torch

from pyro_vae.errors import CheckpointError, ConfigError, TrainingError
from pyro_vae.runs.checkpoint import load_checkpoint
from pyro_vae.runs.load import load_run
from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config, tiny_config_dict


def _params(trainer):
    return [p.detach().clone() for p in trainer.vae.parameters()]


@pytest.mark.parametrize("binarize,objective", [("none", "trace"), ("dynamic", "trace"), ("none", "jit_trace_meanfield")])
def test_resume_is_exact(tmp_path, binarize, objective):
    """2 epochs in one go == 1 epoch + resume for 1 more: identical parameters (same seed, CPU).
    With a JIT objective too: its compiling call runs on a forked random stream, so compiling
    again after the resume does not shift the draws."""
    data = {"binarize": binarize}
    lik = {"name": "gaussian", "variance": "learned"} if binarize == "none" else {"name": "bernoulli"}
    extra = {"data": {"name": "npz", "path": str(tmp_path / "d.npz")}} if binarize != "none" else {}
    if binarize != "none":
        import numpy as np

        np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((80, 6)).astype(np.float32))
    mk = lambda epochs: tiny_config(  # noqa: E731
        data={**extra.get("data", {}), **data},
        model={"z_dim": 2, "likelihood": lik},
        objective={"name": objective},
        optimizer={"name": "adagrad", "lr": 0.05, "schedule": {"name": "exponential", "gamma": 0.9}},
        training={"epochs": epochs, "batch_size": 16},
    )
    full = Trainer(mk(2), tmp_path / "full", progress=False)
    full.train()
    first = Trainer(mk(1), tmp_path / "split", progress=False)
    first.train()
    torch.manual_seed(123)  # whatever happens in between must not matter
    second = Trainer(mk(2), tmp_path / "split", progress=False)
    second.train(resume=True)
    for a, b in zip(_params(full), _params(second)):
        assert torch.equal(a, b)
    assert second.epoch == 2 and second.samples_seen == full.samples_seen
    assert (tmp_path / "split" / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs


def test_a_batch_larger_than_the_training_set_is_named(tmp_path):
    """A minibatch holding the whole training set (a config written for more data) trains full-batch:
    said once, with the size to set; a batch that fits says nothing."""
    import warnings

    trainer = Trainer(tiny_config(training={"batch_size": 100}), tmp_path / "big", progress=False)
    with pytest.warns(UserWarning, match=r"batch_size 100 is larger than the training set \(60 points\).*at most 60") as caught:
        trainer.train()
    assert caught[0].filename == __file__  # the user's line, not pyro-vae's
    assert trainer.step == 1  # one full batch per epoch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(tiny_config(training={"batch_size": 60}), tmp_path / "fits", progress=False).train()
        load_run(tmp_path / "big")  # evaluating, sampling or plotting the run trains nothing: no advice


def test_a_sample_budget_below_one_batch_is_named(tmp_path):
    """Training takes whole minibatches: a budget below one stops after the first, which is said,
    and the metrics record the samples actually seen; a budget of a batch or more says nothing."""
    import warnings

    trainer = Trainer(tiny_config(training={"batch_size": 50, "sample_budget": 10, "epochs": None}), tmp_path / "b", progress=False)
    with pytest.warns(UserWarning, match=r"sample_budget 10 is smaller than one minibatch \(50 points\).*at 50 samples seen"):
        rows = trainer.train()
    assert trainer.step == 1 and rows[-1]["samples_seen"] == 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(tiny_config(training={"batch_size": 50, "sample_budget": 50, "epochs": None}), tmp_path / "ok", progress=False).train()
        load_run(tmp_path / "b")  # evaluating the finished run: no advice on its training


def test_existing_run_needs_resume(tmp_path):
    Trainer(tiny_config(), tmp_path / "r", progress=False).train()
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(tiny_config(), tmp_path / "r", progress=False).train()


def test_the_trainer_takes_a_config_as_a_dict_a_file_or_a_shipped_name(tmp_path):
    import yaml

    from pyro_vae import config as C

    given = tiny_config_dict()
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(given))
    expected = tiny_config()
    for config in (given, tmp_path / "run.yaml", str(tmp_path / "run.yaml")):
        assert Trainer(config, tmp_path / "unused", progress=False).config == expected
    assert Trainer("tiny", tmp_path / "tiny", progress=False).config == C.load("tiny")
    with pytest.raises(ConfigError, match="model.z_dim: Input should be greater than 0"):
        Trainer(tiny_config_dict(model={"z_dim": 0}), tmp_path / "bad", progress=False)
    with pytest.raises(TypeError, match="a config is a RunConfig, a config file's path or name, a run folder, or a dict"):
        Trainer(3, tmp_path / "bad", progress=False)


def test_resume_refuses_changed_settings_unless_allowed(tmp_path):
    """A resume may lengthen training; a changed objective (or model, data, optimizer...) is refused
    with the changed keys named, and with ``allow_changes`` goes on and is recorded in run.json."""
    import json

    run = tmp_path / "r"
    Trainer(tiny_config(training={"epochs": 1}), run, progress=False).train()
    saved_config = (run / "config.yaml").read_text()
    changed = tiny_config(objective={"name": "trace_meanfield"}, optimizer={"name": "adagrad", "lr": 0.05}, training={"epochs": 2})
    with pytest.raises(CheckpointError, match="--allow-changes") as refused:
        Trainer(changed, run, progress=False).train(resume=True)
    for change in ("objective.name: 'trace' -> 'trace_meanfield'", "optimizer.name: 'adam' -> 'adagrad'",
                   "optimizer.lr: 0.01 -> 0.05", "optimizer.eps: 1e-08 -> 1e-10"):  # eps: each optimizer's default
        assert change in str(refused.value)
    assert (run / "config.yaml").read_text() == saved_config  # the refused resume wrote nothing
    assert json.loads((run / "run.json").read_text())["resumed_with_changes"] == []
    # allowed: a warm start of the same model under another objective
    only_objective = tiny_config(objective={"name": "trace_meanfield"}, training={"epochs": 2})
    resumed = Trainer(only_objective, run, progress=False)
    resumed.train(resume=True, allow_changes=True)
    assert resumed.epoch == 2
    history = json.loads((run / "run.json").read_text())["resumed_with_changes"]
    assert history == [{"epoch": 1, "step": history[0]["step"], "changes": {"objective.name": ["trace", "trace_meanfield"]}}]
    # a later resume that only lengthens training keeps the record; options written out at their
    # defaults are no change
    spelled_out = tiny_config(objective={"name": "trace_meanfield"}, training={"epochs": 3},
                              optimizer={"name": "adam", "lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0})
    Trainer(spelled_out, run, progress=False).train(resume=True)
    assert json.loads((run / "run.json").read_text())["resumed_with_changes"] == history


def test_a_run_written_by_another_version_is_named_as_such_not_listed_as_changes(tmp_path):
    """A checkpoint whose config holds a setting this version does not know (a run written by a
    newer pyro-vae) is refused in one line that says so, on resume and on load, instead of listing
    every default as a changed setting."""
    from pyro_vae.runs.checkpoint import save_checkpoint

    run = tmp_path / "r"
    Trainer(tiny_config(training={"epochs": 1}), run, progress=False).train()
    state = load_checkpoint(run / "checkpoint.pt")
    state["config"]["training"]["a_setting_from_the_future"] = True
    save_checkpoint(state, run / "checkpoint.pt")
    message = r"the checkpoint's config is not valid for pyro-vae .*a_setting_from_the_future.*written by another version of pyro-vae"
    with pytest.raises(CheckpointError, match=message) as refused:
        Trainer(tiny_config(training={"epochs": 2}), run, progress=False).train(resume=True)
    assert "\n" not in str(refused.value) and "->" not in str(refused.value)
    with pytest.raises(CheckpointError, match=message):
        load_run(run)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(training={"epochs": 3, "batch_size": 20})
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    trainer.config.training.epochs = 1
    trainer.train()
    good = load_checkpoint(tmp_path / "r")
    trainer.config.training.epochs = 3
    with torch.no_grad():
        trainer.vae.decoder[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="loss became nan.*last good checkpoint.*epoch 1") as stop:
        trainer.train_epoch()
    kept = load_checkpoint(tmp_path / "r")
    assert kept["epoch"] == good["epoch"] == 1
    for k, v in good["vae"].items():
        assert torch.equal(v, kept["vae"][k])
    # the remedies this run does not use yet, and how to go on from the checkpoint with them
    message = str(stop.value)
    assert "smaller optimizer.lr (now 0.01), optimizer clipped_adam, a weight prior" in message
    assert "model.likelihood.min_std" in message  # the tiny config's learned Gaussian variance has no floor
    assert "`--resume --allow-changes` with the new settings continues from it" in message


def test_a_divergence_suggests_only_remedies_the_run_does_not_use(tmp_path):
    cfg = tiny_config(optimizer={"name": "clipped_adam", "lr": 0.01}, objective={"name": "trace", "weight_prior_std": 1.0},
                      model={"likelihood": {"name": "gaussian", "variance": "learned", "min_std": 0.01}})
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    with torch.no_grad():
        trainer.vae.decoder[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingError) as stop:
        trainer.train()
    message = str(stop.value)
    assert "Try a smaller optimizer.lr (now 0.01);" in message
    assert "clipped_adam" not in message and "weight_prior_std" not in message and "min_std" not in message
    assert "no checkpoint had been written yet" in message and "the same command with the new settings starts it afresh" in message
    # a fixed variance cannot collapse: no floor to suggest for it
    fixed = Trainer(tiny_config(model={"likelihood": {"name": "gaussian", "variance": "fixed"}}), tmp_path / "fixed", progress=False)
    with torch.no_grad():
        fixed.vae.decoder[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingError) as stop:
        fixed.train()
    assert "min_std" not in str(stop.value) and "optimizer clipped_adam" in str(stop.value)


def test_parameters_that_diverge_between_loss_checks_stop_with_the_same_message(tmp_path):
    # NaN mixture weights make the next step's prior sample fail inside torch ("probability tensor
    # contains either inf, nan or element < 0") before any loss is checked: that was a traceback
    cfg = tiny_config(model={"prior": {"name": "mixture_of_gaussians", "components": 3}}, objective={"name": "wake_sleep"},
                      training={"epochs": 1, "batch_size": 20, "log_every": 50})
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    with torch.no_grad():
        for p in trainer.vae.prior.parameters():
            p.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"parameters became non-finite \(epoch 1, step 1: probability tensor.*no checkpoint had been written yet"):
        trainer.train()
    # with sgd, the message says why its lr depends on the size of the training set
    sgd = Trainer(tiny_config(optimizer={"name": "sgd", "lr": 0.01}), tmp_path / "sgd", progress=False)
    with torch.no_grad():
        sgd.vae.decoder[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"smaller optimizer.lr \(now 0.01; sgd's step is lr times the gradient .* all N = 60 training points"):
        sgd.train()
    # an error with finite parameters is not dressed up as divergence
    trainer = Trainer(tiny_config(training={"epochs": 1, "batch_size": 20}), tmp_path / "s", progress=False)
    trainer.x_train = trainer.x_train[:, :3]  # the wrong number of features
    with pytest.raises(RuntimeError) as error:
        trainer.train()
    assert not isinstance(error.value, TrainingError)


def test_cuda_asked_without_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU.*--device cpu"):
        Trainer(tiny_config(device="cuda"), tmp_path / "r", progress=False)


def test_sample_budget_and_metrics(tmp_path):
    trainer = Trainer(tiny_config(training={"epochs": None, "sample_budget": 100, "batch_size": 20}), tmp_path / "r", progress=False)
    rows = trainer.train()
    assert trainer.samples_seen == 100 and len(rows) == 2  # 60 points per epoch: 60 + 40
    assert all(math.isfinite(r["test_elbo"]) for r in rows)
    reloaded = load_run(tmp_path / "r")
    assert reloaded.samples_seen == 100
    for a, b in zip(_params(trainer), _params(reloaded)):
        assert torch.equal(a, b)


def test_training_improves_the_elbo(tmp_path):
    cfg = tiny_config(data={"n_train": 300}, training={"epochs": 15, "batch_size": 30})
    rows = Trainer(cfg, tmp_path / "r", progress=False).train()
    assert rows[-1]["test_elbo"] > rows[0]["test_elbo"] + 1.0


@pytest.mark.parametrize("objective,registered", [("trace_meanfield", False), ("wake_sleep", False), ("jit_trace", True)])
def test_param_store_is_used_only_when_needed(tmp_path, objective, registered):
    import pyro

    trainer = Trainer(tiny_config(objective={"name": objective}), tmp_path / "r", progress=False)
    before = [p.detach().clone() for p in trainer.vae.parameters()]
    trainer.train()
    assert (len(pyro.get_param_store()) > 0) == registered
    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.vae.parameters()) if a.numel() > 1)


def test_first_step_imports_nothing_heavy(tmp_path):
    """The first training step stays fast (the speed issue's first-step target) by importing neither
    torch._dynamo (torch.optim does, about 1 s) nor sympy (torch.broadcast_shapes' first call does,
    about 0.35 s). Checked by module presence in a fresh process, not by timing."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from pyro_vae import config as C\n"
        "from pyro_vae.data.datasets import Dataset\n"
        "from pyro_vae.training.trainer import Trainer\n"
        "x = torch.bernoulli(torch.full((20, 784), 0.3))\n"
        "for objective in ('jit_trace_meanfield', 'trace_meanfield', 'trace'):\n"
        "    cfg = C.load('aevb_mnist', ['device=cpu', 'objective.name=' + objective, 'training.batch_size=10'])\n"
        f"    tr = Trainer(cfg, r'{tmp_path}/' + objective, data=Dataset('b', x, x, (1, 28, 28)), progress=False)\n"
        "    tr.objective.loss(tr.vae, x[:10], torch.arange(10), 20).backward()\n"
        "    tr.optimizer.step()\n"
        "print([m for m in ('torch._dynamo', 'sympy') if m in sys.modules])\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_epoch_line_names_what_was_measured():
    """A NaN train ELBO (objectives other than the ELBO log none unless asked) is reported as not
    measured, not printed as "nan"; the ELBO objectives' own value is printed once."""
    from pyro_vae.training.trainer import describe_epoch

    row = {"epoch": 2, "train_objective": -10.5, "train_elbo": float("nan"), "test_elbo": -11.25}
    line = describe_epoch(row, "mcem")
    assert line.startswith("epoch 2: train mcem -10.500, train ELBO not measured (training.eval_train_points")
    assert line.endswith("test ELBO -11.250 nats per datapoint") and "nan" not in line
    row = {"epoch": 1, "train_objective": -8.5, "train_elbo": -8.5, "test_elbo": float("nan")}
    assert describe_epoch(row, "trace") == "epoch 1: train ELBO -8.500 nats per datapoint"


def test_a_resume_with_changes_checkpoints_them_at_once(tmp_path, monkeypatch):
    """If the resumed run stops before its next checkpoint, config.yaml and the checkpoint still agree."""
    run = tmp_path / "r"
    Trainer(tiny_config(), run, progress=False).train()
    resumed = Trainer(tiny_config(objective={"name": "trace_meanfield"}, training={"epochs": 2}), run, progress=False)

    def crash(*args, **kwargs):
        raise RuntimeError("the machine went down")

    monkeypatch.setattr(resumed, "_train_epoch", crash)
    with pytest.raises(RuntimeError, match="went down"):
        resumed.train(resume=True, allow_changes=True)
    reloaded = load_run(run)
    assert reloaded.config.objective.name == "trace_meanfield" and reloaded.epoch == 1


def test_the_test_elbo_comes_with_its_standard_error_and_older_metrics_files_resume(tmp_path):
    import csv

    from pyro_vae.estimators.result import standard_error
    from pyro_vae.runs.records import read_metrics
    from pyro_vae.training.trainer import describe_epoch, elbo_per_datapoint

    run = tmp_path / "r"
    trainer = Trainer(tiny_config(training={"epochs": 2}), run, progress=False)
    rows = trainer.train()
    torch.manual_seed(5)
    values = elbo_per_datapoint(trainer.vae, trainer.x_test).double()
    torch.manual_seed(5)
    assert trainer._sharded_elbo(trainer.x_test, 1000) == (values.mean().item(), standard_error(values))
    assert 0 < rows[-1]["test_elbo_stderr"] < math.inf
    assert f"test ELBO {rows[-1]['test_elbo']:.3f} +- {rows[-1]['test_elbo_stderr']:.3f} nats" in describe_epoch(rows[-1], "trace")
    # a metrics.csv written before the column existed: read as "not measured", and rewritten whole by a resume
    with open(run / "metrics.csv", newline="") as f:
        old = [{k: v for k, v in r.items() if k != "test_elbo_stderr"} for r in csv.DictReader(f)]
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(old[0]))
        w.writeheader()
        w.writerows(old)
    assert [r["test_elbo_stderr"] for r in read_metrics(run / "metrics.csv")[0]] == ["nan", "nan"]
    Trainer(tiny_config(training={"epochs": 3}), run, progress=False).train(resume=True)
    rows, unreadable = read_metrics(run / "metrics.csv")
    assert unreadable == 0 and [r["test_elbo_stderr"] for r in rows][:2] == ["nan", "nan"]
    assert 0 < float(rows[2]["test_elbo_stderr"]) < math.inf


def test_a_new_run_does_not_replace_a_users_files_in_the_folder_it_is_given(tmp_path):
    """A config kept in the folder named as the run folder, or a metrics.csv of the user's, is not
    replaced; a folder left by a run that stopped before its first checkpoint starts afresh."""
    mine = tmp_path / "exp"
    mine.mkdir()
    (mine / "config.yaml").write_text("# my notes\nname: exp\n")
    (mine / "metrics.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match="holds config.yaml, metrics.csv that no pyro-vae run wrote .* choose another --run-dir"):
        Trainer(tiny_config(), mine, progress=False).train()
    assert (mine / "config.yaml").read_text() == "# my notes\nname: exp\n" and (mine / "metrics.csv").read_text() == "a,b\n"
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "metrics.csv"]
    (mine / "run.json").write_text("{}")  # not pyro-vae's either
    with pytest.raises(ConfigError, match="holds config.yaml, run.json, metrics.csv that no pyro-vae run wrote"):
        Trainer(tiny_config(), mine, progress=False).train()

    stopped = tmp_path / "stopped"  # a run that stopped before its first checkpoint
    trainer = Trainer(tiny_config(), stopped, progress=False)
    trainer.prepare_run_dir(resume=False)
    assert sorted(p.name for p in stopped.iterdir()) == ["config.yaml", "run.json"]
    Trainer(tiny_config(), stopped, progress=False).train()
    assert (stopped / "checkpoint.pt").exists()


@pytest.mark.parametrize("run_dir, message", [(5, r"must be a folder path \(a str or pathlib.Path\), got 5"),
                                              (None, "got None"), ("", "the run folder .* is empty; give a folder path")])
def test_a_run_folder_that_is_no_path_is_named(run_dir, message):
    with pytest.raises(ConfigError, match=message):  # pathlib's TypeError before; "" meant the current folder
        Trainer(tiny_config(), run_dir, progress=False)
