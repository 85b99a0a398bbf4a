"""Bad input never gives a traceback, a silent wrong number or lost data: each case ends in a
one-line error (exit 2) that names the problem and the fix, or in the right result. Property-based
tests then generate configs, ``--set`` values, flags and data files and ask the same of all."""

import json
import multiprocessing
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_vae import config as C
from pyro_vae.cli import main
from pyro_vae.config.build import dataset_from_config, objective_from_config, optimizer_from_config, vae_from_config
from pyro_vae.errors import ConfigError
from pyro_vae.files import BusyError, exclusive_lock, replaced_atomically
from pyro_vae.runs.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import tiny_config

TINY = ["--no-progress", "--set", "training.epochs=1"]


def _one_line_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("pyro-vae: error:")]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.fixture
def trained(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), *TINY]) == 0
    return run


# --- data kept whole --------------------------------------------------------------------------
def _build_cache(root: str, queue) -> None:
    """One of several processes that read MNIST for the first time at once: it builds the cache
    unless another does so first (then it reads that one)."""
    from pyro_vae.data import cache as data_cache, mnist

    calls = []

    def slow_build(folder, cache, download, source):
        calls.append(1)
        arrays = {"x_train": np.zeros((3, 784), np.float32), "y_train": np.zeros(3, np.int64),
                  "x_valid": np.zeros((1, 784), np.float32), "y_valid": np.zeros(1, np.int64),
                  "x_test": np.zeros((2, 784), np.float32), "y_test": np.zeros(2, np.int64)}
        data_cache.save_npz(cache, source=np.array("test"), **arrays)

    mnist._build_mnist_cache = slow_build
    path = mnist.ensure_mnist(Path(root), download=True)
    with np.load(path) as f:  # a whole archive, never half of one
        queue.put((len(calls), f["x_train"].shape))


def test_processes_that_fill_the_data_cache_at_once_build_it_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_build_cache, args=(str(tmp_path), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = [queue.get(timeout=5) for _ in procs]
    assert all(p.exitcode == 0 for p in procs)
    assert sum(built for built, _ in results) == 1 and all(shape == (3, 784) for _, shape in results)
    assert not [p.name for p in (tmp_path / "mnist").iterdir() if p.name.endswith(".tmp")]


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    with exclusive_lock(run, "the run folder", wait=False):  # a trainer at work in it
        with pytest.raises(BusyError, match="another process is using the run folder"):
            with exclusive_lock(run, "the run folder", wait=False):
                pass
        line = _one_line_error(capsys, main(["train", "tiny", "--run-dir", str(run), *TINY]))
    assert "another process is using the run folder" in line and not (run / "metrics.csv").exists()
    assert main(["train", "tiny", "--run-dir", str(run), *TINY]) == 0  # free again


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with replaced_atomically(path) as first, replaced_atomically(path) as second:
        assert first.name != second.name
        first.write(b"a")
        second.write(b"bb")
    assert path.read_bytes() == b"a" and not list(tmp_path.glob("*.tmp"))  # the last complete file wins


@pytest.mark.parametrize("name", ["/some/folder", "../../x", "a/b", "..", ".hidden", "a b"])
def test_a_config_name_is_no_path(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(capsys, main(["train", "tiny", "--no-progress", "--set", f"name={name}"]))
    assert "name: must be a plain folder name" in line and "--run-dir" in line
    assert not (tmp_path / "runs").exists()


def test_evaluate_names_an_unwritable_folder_before_the_work(trained, capsys):
    os.chmod(trained, 0o555)
    try:
        if os.access(trained, os.W_OK):
            pytest.skip("root writes into read-only folders")
        line = _one_line_error(capsys, main(["evaluate", str(trained), "--k", "5", "--no-progress"]))
        assert "cannot be written" in line
    finally:
        os.chmod(trained, 0o755)


def test_an_estimate_that_cannot_be_written_is_named_in_the_error(trained, capsys, monkeypatch):
    import errno

    from pyro_vae.runs import evaluate

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluate, "write_text_atomically", full_disk)
    line = _one_line_error(capsys, main(["evaluate", str(trained), "--k", "5", "--no-progress"]))
    assert "log p(x) = -" in line and "was computed but cannot be written" in line


def test_a_write_failure_anywhere_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from pyro_vae import config

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "config.yaml"))

    monkeypatch.setattr(config, "write_text_atomically", full_disk)
    line = _one_line_error(capsys, main(["train", "tiny", "--run-dir", str(tmp_path / "run"), *TINY]))
    assert "the disk is full" in line and "config.yaml" in line


# --- no silent wrong number -------------------------------------------------------------------
@pytest.mark.parametrize("override", ["training.batch_size=true", "model.z_dim=true", "seed=false", "training.epochs=1.5"])
def test_a_boolean_or_fraction_is_no_count(override):
    with pytest.raises(ConfigError, match="Input should be a valid integer"):
        C.load("tiny", [override])


@pytest.mark.parametrize("overrides, message", [
    # treated as "unset" (as many dreams as points) before
    (["objective.name=rws", "objective.dream_batch_size=0"], "dream_batch_size must be a whole number >= 1, got 0"),
    (["objective.name=mcem", "objective.m_steps=0"], "m_steps must be a whole number >= 1, got 0"),
    # Pyro's ClippedAdam checks nothing: these trained on (lrd 2 doubles the step size at every step) or ended in NaN
    (["optimizer.name=clipped_adam", "optimizer.lrd=2"], r"ClippedAdam: .* lrd in \(0, 1\]; got .*lrd=2"),
    (["optimizer.name=clipped_adam", "optimizer.clip_norm=0"], r"clip_norm finite and > 0 .*clip_norm=0,"),
    (["optimizer.name=clipped_adam", "optimizer.eps=-1"], r"ClippedAdam: lr, eps and weight_decay must be finite and >= 0"),
    # means that start equal stay equal: one Gaussian in K copies
    (["model.prior.name=mixture_of_gaussians", "model.prior.init_spread=0"], r"init_spread .* must be a finite number > 0, got 0"),
    # an IndexError from inside Pyro before
    (["model.guide.name=iaf", "model.guide.hidden_dims=[]"], r"hidden_dims must list one or more layer widths >= z_dim \(2\), got \[\]"),
])
def test_a_component_option_out_of_its_range_is_one_line(tmp_path, capsys, overrides, message):
    argv = ["train", "tiny", "--run-dir", str(tmp_path / "run"), *TINY]
    for item in overrides:
        argv += ["--set", item]
    line = _one_line_error(capsys, main(argv))
    assert re.search(message, line), line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_the_app_d_estimator_needs_more_draws_than_latent_dimensions(trained, capsys):
    line = _one_line_error(capsys, main(["evaluate", str(trained), "--estimator", "hmc", "--n", "2", "--hmc-warmup", "5",
                                         "--hmc-samples", "1", "--hmc-chains", "1", "--no-progress"]))
    assert "more draws than the 2 latent dimensions" in line and "--hmc-samples" in line


def test_a_checkpoint_with_nan_weights_gives_no_number(trained, capsys):
    state = load_checkpoint(trained / "checkpoint.pt")
    name = next(iter(state["vae"]))
    state["vae"][name] = torch.full_like(state["vae"][name], float("nan"))
    save_checkpoint(state, trained / "checkpoint.pt")
    line = _one_line_error(capsys, main(["evaluate", str(trained), "--k", "5", "--no-progress"]))
    assert "weights that are not finite" in line and not list(trained.glob("eval_*.json"))


def test_an_estimate_that_is_no_number_is_not_written(trained, capsys, monkeypatch):
    from pyro_vae import estimators

    real = estimators.iwae

    def nan_iwae(*args, **kwargs):
        est = real(*args, **kwargs)
        est.per_datapoint[0] = float("nan")
        return est

    monkeypatch.setattr(estimators, "iwae", nan_iwae)
    line = _one_line_error(capsys, main(["evaluate", str(trained), "--k", "5", "--no-progress"]))
    assert "came out as nan" in line and not list(trained.glob("eval_*.json"))


def test_a_beta_likelihood_refuses_binary_data(tmp_path, capsys):
    np.savez(tmp_path / "bin.npz", x=(np.random.default_rng(0).random((50, 6)) < 0.5).astype(np.float32))
    line = _one_line_error(capsys, main(["train", "tiny", "--run-dir", str(tmp_path / "r"), *TINY, "--set",
                                         f"data={{name: npz, path: {tmp_path / 'bin.npz'}}}", "--set", "model.likelihood.name=beta"]))
    assert "where the Beta density has no upper bound" in line and "bernoulli" in line


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((10, 3), np.float32), "y": np.zeros(7)}, "y holds 7 labels for 10 points"),
    ({"x": np.zeros((10, 3), np.complex64)}, "holds complex numbers"),
    ({"x": np.zeros((10, 0), np.float32)}, "no values per datapoint"),
])
def test_an_npz_file_that_cannot_be_what_it_says_is_refused(tmp_path, capsys, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    line = _one_line_error(capsys, main(["train", "tiny", "--run-dir", str(tmp_path / "r"), *TINY, "--set",
                                         f"data={{name: npz, path: {tmp_path / 'd.npz'}}}"]))
    assert message in line


def test_a_test_fraction_outside_0_and_1_is_refused(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), np.float32))
    line = _one_line_error(capsys, main(["train", "tiny", "--run-dir", str(tmp_path / "r"), *TINY, "--set",
                                         f"data={{name: npz, path: {tmp_path / 'd.npz'}, test_fraction: -0.5}}"]))
    assert "test_fraction must lie strictly between 0 and 1" in line


def test_without_run_json_the_checkpoint_still_knows_its_data(tmp_path, capsys):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), *TINY, "--set", f"data={{name: npz, path: {data}}}"]) == 0
    (run / "run.json").unlink()
    np.savez(data, x=np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32))  # changed in place
    capsys.readouterr()
    line = _one_line_error(capsys, main(["evaluate", str(run), "--k", "5", "--no-progress"]))
    assert "is not what it was trained with" in line
    line = _one_line_error(capsys, main(["train", str(run), "--resume", "--no-progress", "--set", "training.epochs=2"]))
    assert "data contents" in line


def test_a_setting_the_estimator_does_not_read_is_named(trained, capsys):
    with pytest.warns(UserWarning, match=r"--k does not apply to --estimator ais and is ignored"):
        assert main(["evaluate", str(trained), "--estimator", "ais", "--k", "7", "--ais-steps", "3", "--ais-chains", "2", "--n", "3",
                     "--no-progress"]) == 0


def test_a_divergence_names_the_learning_rate_the_schedule_reached(tmp_path):
    from pyro_vae.errors import TrainingError
    from pyro_vae.training.trainer import Trainer

    config = tiny_config(optimizer={"name": "adam", "lr": 0.01, "schedule": {"name": "exponential", "gamma": 10.0}},
                         training={"epochs": 3})
    trainer = Trainer(config, tmp_path / "r", progress=False)
    trainer.run_dir.mkdir()
    trainer.train_epoch()
    trainer.train_epoch()
    with pytest.raises(TrainingError, match=r"now 1\b"):
        trainer._stop_diverged("test")


# --- no traceback -----------------------------------------------------------------------------
def test_a_binary_config_file_is_one_line(tmp_path, capsys):
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe\x00binary")
    assert "is not text" in _one_line_error(capsys, main(["train", str(tmp_path / "c.yaml"), *TINY]))


@pytest.mark.parametrize("override, message", [
    ("model.z_dim=1000000000000", "model.z_dim: Input should be less than or equal to"),
    ("data.n_train=1000000000000", "synthetic points would take"),
    ("data.x_dim=0", "x_dim and z_dim >= 1"),
    ("model.encoder.init_std=-1", "init_std must be a standard deviation >= 0"),
    ("model.encoder.hidden=[2000000000]", "weights (5-2000000000-4) with their gradients and optimizer state would take"),
    ("seed=99999999999999999999999", "seed: Input should be less than"),
])
def test_sizes_beyond_the_machine_are_refused_before_allocating(tmp_path, capsys, override, message):
    line = _one_line_error(capsys, main(["train", "tiny", "--run-dir", str(tmp_path / "r"), *TINY, "--set", override]))
    assert message in line


def test_a_seed_flag_beyond_64_bits_is_refused(trained, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(trained), "--seed", "99999999999999999999999"])
    assert exit_info.value.code == 2 and "expected a whole number below 2**63" in capsys.readouterr().err


def test_compare_refuses_values_that_are_no_numbers(trained, capsys):
    assert main(["evaluate", str(trained), "--k", "5", "--no-progress"]) == 0
    path = trained / "eval_iwae_k5_test.json"
    result = json.loads(path.read_text())
    result["per_datapoint"] = ["x"] * len(result["per_datapoint"])
    (trained / "altered.json").write_text(json.dumps(result))
    capsys.readouterr()
    line = _one_line_error(capsys, main(["compare", str(path), str(trained / "altered.json")]))
    assert "must hold one finite number per point" in line


# --- generated inputs -------------------------------------------------------------------------
KEYS = ["seed", "name", "model.z_dim", "model.prior.name", "model.likelihood.name", "model.guide.name", "model.encoder.hidden",
        "training.batch_size", "training.epochs", "training.sample_budget", "optimizer.name", "optimizer.lr",
        "objective.name", "objective.num_particles", "data.n_train", "data.binarize", "evaluation.k", "evaluation.estimator",
        "model.prior.components", "model.prior.init_spread", "model.guide.hidden_dims", "objective.dream_batch_size", "optimizer.lrd"]
VALUES = st.one_of(
    st.integers(min_value=-10**20, max_value=10**20).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "[]", "{}", "[1, -2]", "{name: x}", "'a/b'", "..", "vamp", "bernoulli", "iaf",
                     "adam", "iwae", "mcem", "ais", "static", "0", "1e999", "-1", "~", "a: b"]),
    st.text(max_size=8),
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_any_set_values_give_a_config_or_one_line_error(overrides):
    """... and a config that loads builds its model, objective and optimizer, or names why not."""
    try:
        cfg = C.load("tiny", [f"{key}={value}" for key, value in overrides])
        data = dataset_from_config(cfg.data)
        vae = vae_from_config(cfg.model, data.x_shape)
        objective_from_config(cfg.objective).check(vae)
        optimizer_from_config(cfg.optimizer, list(vae.parameters()), cfg.objective.weight_prior_std)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)


FLAGS = ["--k", "--n", "--seed", "--memory-gb", "--ais-steps", "--ais-chains", "--ais-start", "--ais-schedule", "--hmc-samples",
         "--hmc-chains", "--hmc-warmup", "--split", "--estimator", "--device"]


@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FLAGS), st.sampled_from(["0", "-1", "2", "3", "1.5", "nan", "inf", "x", "", "prior", "linear",
                                                                    "train", "bdmc", "exact", "hmc", "cpu", "cuda:x", "99999999999999999999"])),
                max_size=3))
def test_any_evaluate_flags_give_a_result_or_one_line_error(tmp_path_factory, flags):
    run = tmp_path_factory.getbasetemp() / "generated_flags_run"
    if not (run / "checkpoint.pt").exists():
        assert main(["train", "tiny", "--run-dir", str(run), *TINY, "--set", "data.n_test=6"]) == 0
    (run / "generated.json").unlink(missing_ok=True)  # a path the user names is never replaced
    argv = ["evaluate", str(run), "--no-progress", "--n", "3", "--k", "3", "--ais-steps", "2", "--ais-chains", "2", "--hmc-samples", "3",
            "--hmc-warmup", "2", "--out", str(run / "generated.json")]
    for flag, value in flags:
        argv += [flag, value]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusal of a flag: one usage line and exit 2
        code = e.code
    assert code in (0, 2)


@settings(max_examples=20, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=3),
       dtype=st.sampled_from(["float32", "float64", "uint8", "int64", "complex64", "bool", "U1"]),
       fill=st.sampled_from([0.0, 0.5, 1.0, float("nan"), float("inf"), 300.0]))
def test_any_small_npz_gives_data_or_one_line_error(tmp_path_factory, shape, dtype, fill):
    from pyro_vae.errors import DataError

    folder = tmp_path_factory.mktemp("npz")
    x = np.full(shape, fill).astype(dtype) if dtype != "U1" else np.full(shape, "a")
    np.savez(folder / "d.npz", x=x)
    try:
        dataset_from_config(C.DataConfig(name="npz", path=str(folder / "d.npz")))
    except (DataError, ConfigError) as e:
        assert "\n" not in str(e)
