"""The benchmark scripts' code paths on tiny sizes (speed itself is never asserted in tests)."""

import argparse
import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

from tests.test_devices import DEVICES

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    """A benchmark script (``benchmarks/<name>.py``) as a module, as ``python`` would load it by path."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_first_step_is_timed_in_fresh_processes_with_a_bytecode_cache_outside_the_source_tree(tmp_path, monkeypatch):
    """Each side's first step runs in fresh processes sharing a bytecode cache (as an installed
    package has one), written under the given folder, not beside the sources."""
    mod = _load("bench_train")
    monkeypatch.setattr(mod, "FIRST_STEP_PROCESSES", 1)  # one warm-up and one timed process
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # as on the machine this was found on
    sources = BENCHMARKS.parent / "pyro_vae"
    had_cache = (sources / "__pycache__").exists()
    args = argparse.Namespace(hidden=8, z=2, batch=4, device="cpu")
    seconds = mod.first_step_seconds("pyro-vae", args, str(tmp_path))
    assert 0 < seconds < 60
    cached = {p.name.split(".")[0] for p in tmp_path.rglob("*.pyc") if "pyro_vae" in p.parts}
    assert {"schema", "trainer", "model"} <= cached  # pyro-vae's modules, compiled once and kept
    assert (sources / "__pycache__").exists() == had_cache


@pytest.mark.parametrize("device", DEVICES)
def test_training_benchmark_runs_on_tiny_data(capsys, device):
    mod = _load("bench_train")
    mod.main(argparse.Namespace(epochs=2, n=200, batch=50, hidden=16, z=2, activation="relu", objective="trace", threads=1, device=device,
                                fresh_first_step=False, cuda_graphs=False))
    out = capsys.readouterr().out
    assert "ratio pyro-vae / plain torch:" in out and "with the same optimizer" in out
    curves = [line for line in out.splitlines() if line.startswith("train ELBO by epoch")]
    assert len(curves) == 3
    for line in curves:  # one finite ELBO per epoch
        values = [float(v) for v in line.split()[-2:]]
        assert all(math.isfinite(v) and v < 0 for v in values)
    assert "largest gap from epoch 2 on" in out

    # the suite's summary reads these lines
    run_all = _load("run_all")
    row = run_all.summarize("tiny", out, with_first_step=True)
    assert row.startswith("| tiny | pyro-vae / plain torch ") and "same optimizer" in row and "first step" in row
    # each ratio carries the quartiles of its 2 paired epochs
    assert "paired pyro-vae / plain torch: median " in out and "over 2 epochs" in out
    assert re.search(r"pyro-vae / plain torch [0-9.]+ \(rounds [0-9.]+-[0-9.]+\);", row)
    runs = [cmd for _, cmd in run_all.training_runs(quick=True)]
    # 2 shapes x (4 objectives at batch 100 + the 2 eager ones at batch 1000)
    assert len(runs) == 12 and sum("jit_trace" in cmd for cmd in runs) == 2
    # on CUDA, the paper's model replayed as CUDA graphs too (both ELBO estimators)
    on_gpu = [cmd for _, cmd in run_all.training_runs(quick=True, device="cuda")]
    graphed = [cmd for cmd in on_gpu if "--cuda-graphs" in cmd]
    assert len(graphed) == 2 and all("--n" in cmd for cmd in graphed)
    assert len(on_gpu) == 4 + 2 and all(cmd[cmd.index("--batch") + 1] == "100" for cmd in on_gpu)  # the paper's model only
    # a trained run's IWAE: 100 test images on CPU, the whole test set on a GPU
    trained = {device: run_all.iwae_runs(False, device, "runs/x")[-1][1] for device in ("cpu", "cuda")}
    assert trained["cpu"][trained["cpu"].index("--n") + 1] == "100" and trained["cuda"][trained["cuda"].index("--n") + 1] == "10000"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_training_benchmark_with_cuda_graphs_runs_on_tiny_data(capsys):
    """pyro-vae's replayed steps against a captured plain twin; 230 points at batch 50 end each epoch
    with a short minibatch, which both sides train eagerly."""
    mod = _load("bench_train")
    mod.main(argparse.Namespace(epochs=3, n=230, batch=50, hidden=16, z=2, activation="tanh", objective="trace_meanfield", threads=1,
                                device="cuda", fresh_first_step=False, cuda_graphs=True))
    out = capsys.readouterr().out
    assert "ratio pyro-vae / plain torch, both as CUDA graphs:" in out
    curves = [line for line in out.splitlines() if line.startswith("train ELBO by epoch")]
    assert len(curves) == 4 and all(math.isfinite(float(v)) for line in curves for v in line.split()[-3:])


@pytest.mark.parametrize("device", DEVICES)
def test_iwae_benchmark_runs_on_tiny_data(capsys, device):
    mod = _load("bench_iwae")
    mod.main(argparse.Namespace(k=10, n=4, repeats=1, memory_gb=0.01, threads=1, random=True, device=device, run=None))
    out = capsys.readouterr().out
    assert "ratio pyro-vae / matmul bound" in out and "ratio pyro-vae / plain torch" in out
    assert "ratio pyro-vae / networks + softplus" in out and "ratio pyro-vae / tuned torch" in out
    assert "ratio pyro-vae iwae() call / tuned torch" in out  # the estimator as users call it
    assert "paired pyro-vae / matmul bound: median " in out and "over 1 datapoint chunks" in out  # 4 points, one chunk
    # the hand-written IWAEs and the estimator are the same estimator: their means agree
    ours, plain, tuned = _mean_log_px(out)
    assert abs(ours - plain) < 5.0 and abs(ours - tuned) < 5.0


def _mean_log_px(out: str) -> list:
    """The mean log p(x) printed by each side of bench_iwae: pyro-vae, plain torch, tuned torch."""
    lines = [line for line in out.splitlines() if "mean log p(x)" in line]
    assert [line.split()[0] for line in lines] == ["pyro-vae", "plain", "tuned"]
    return [float(line.split("mean log p(x)")[1].split(";")[0].strip(" )")) for line in lines]


def test_iwae_benchmark_times_a_trained_run(tmp_path, capsys):
    import numpy as np

    from pyro_vae.training.trainer import Trainer
    from tests.conftest import tiny_config

    np.savez(tmp_path / "d.npz", x=(np.random.default_rng(0).random((40, 16)) < 0.3).astype(np.float32))
    run = tmp_path / "run"
    Trainer(tiny_config(data={"name": "npz", "path": str(tmp_path / "d.npz"), "n_test": 4}, model={"likelihood": {"name": "bernoulli"}},
                        objective={"name": "trace_meanfield"}, training={"epochs": 1, "batch_size": 10}), run, progress=False).train()
    mod = _load("bench_iwae")
    mod.main(argparse.Namespace(k=10, n=4, repeats=1, memory_gb=0.01, threads=1, random=False, device="cpu", run=str(run)))
    out = capsys.readouterr().out
    assert f"trained model of {run}" in out and "on 4 points" in out
    ours, plain, tuned = _mean_log_px(out)
    assert abs(ours - plain) < 5.0 and abs(ours - tuned) < 5.0  # the same estimator on the trained model


@pytest.mark.parametrize("device", DEVICES)
def test_hmc_benchmark_runs_on_tiny_data(capsys, monkeypatch, device):
    from pyro_vae.mcmc import potentials

    monkeypatch.setattr(potentials.switched_on, "value", True)  # compiled, whatever PYRO_VAE_COMPILE_POTENTIALS says
    mod = _load("bench_hmc")
    mod.main(argparse.Namespace(points=5, z=2, hidden=8, leapfrog=2, trajectories=2, repeats=1, threads=1, device=device))
    out = capsys.readouterr().out
    assert "ratio batched HMC / plain loop" in out and "ratio batched HMC, eager traces / plain loop" in out
    assert "paired batched HMC / plain loop (time): median " in out and "over 2 trajectories" in out
    if device == "cpu":  # potentials are compiled on the CPU only
        assert "estimators' potential (compiled per shape)" in out  # 5 chains: below the fused layers' threshold


def test_device_scripts_parse_and_name_files_that_exist():
    """benchmarks/device/*.sh run on a GPU machine only when one is lent: here, at least, bash
    parses them and every test or benchmark file they name is in the tree."""
    import re
    import subprocess

    root = Path(__file__).resolve().parents[1]
    for script in ("prepare.sh", "check.sh"):
        path = root / "benchmarks" / "device" / script
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, script
        for named in re.findall(r"\b((?:tests|benchmarks)/[\w/]+\.(?:py|sh))", path.read_text()):
            assert (root / named).exists(), f"{script} names {named}, which does not exist"


def test_paired_ratios_are_per_round_and_their_quartiles():
    paired = _load("paired")
    # rounds' ratios 1.0, 2.0, 3.0, 4.0, 5.0 (in another order): median 3, inclusive quartiles 2 and 4
    line = paired.paired_ratios_line("a / b", [4.0, 1.0, 10.0, 9.0, 10.0], [1.0, 1.0, 5.0, 3.0, 2.0], "rounds")
    assert line == "paired a / b: median 3.000, quartiles 2.000-4.000 over 5 rounds"
    assert paired.paired_ratios_line("a / b", [3.0], [2.0], "epochs") == "paired a / b: median 1.500, quartiles 1.500-1.500 over 1 epochs"
    with pytest.raises(ValueError, match="one time per round on each side"):
        paired.paired_ratios_line("a / b", [1.0, 2.0], [1.0], "rounds")


@pytest.mark.parametrize("device", DEVICES)
def test_ais_benchmark_runs_on_tiny_data(capsys, device):
    """The estimator and the plain AIS loop estimate the same log p(x) (different draws) and the
    suite summarises the ratio line."""
    mod = _load("bench_ais")
    mod.main(argparse.Namespace(points=3, chains=2, steps=4, leapfrog=2, step_size=0.05, z=2, hidden=8, repeats=2, threads=1, device=device))
    out = capsys.readouterr().out
    estimates = [float(line.split("mean log p(x)")[1].strip(" )")) for line in out.splitlines() if "mean log p(x)" in line]
    assert len(estimates) == 2 and all(math.isfinite(v) for v in estimates) and abs(estimates[0] - estimates[1]) < 5.0
    assert "over 2 rounds" in out
    run_all = _load("run_all")
    assert re.search(r"\| tiny \| pyro-vae ais\(\) / plain loop \(time\) [0-9.]+ \(rounds [0-9.]+-[0-9.]+\) \|", run_all.summarize("tiny", out, False))
    assert [cmd[cmd.index("--chains") + 1] for _, cmd in (run_all.ais_runs(False, "cpu") + run_all.ais_runs(False, "cuda"))] == ["4", "16"]
