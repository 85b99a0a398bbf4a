"""The device path (``--device``): training, checkpoints, resume and every estimator, on each device
this machine has.

Each test runs on the CPU everywhere, and on CUDA where torch sees a GPU; without one the CUDA
cases are skipped (pytest says why), and the CPU cases still exercise the checks themselves. On a
GPU machine run them alone with ``python -m pytest tests/test_devices.py``.
"""

from __future__ import annotations

import json
from typing import Iterable

import pytest
import torch

from pyro_vae import estimators as E
from pyro_vae.cli import main
from pyro_vae.config.build import vae_from_config
from pyro_vae.data.datasets import binarize
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.objectives.mcem import MonteCarloEM
from pyro_vae.optimizers.inplace import SGD, Adagrad, Adam
from pyro_vae.runs.load import load_run
from pyro_vae.runs.plotting import plot_run
from pyro_vae.training.trainer import Trainer
from tests.components.test_registry import (
    GUIDE_CASES,
    LIKELIHOOD_CASES,
    OBJECTIVE_NAMES,
    PRIOR_CASES,
    _image_data,
    _train_one_step,
)
from tests.conftest import tiny_config
from tests.estimators.test_pyro_models import GammaPrecision, estimates_beside_the_exact_log_px

NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_GPU)]
# (trained on, resumed on)
DEVICE_PAIRS = [("cpu", "cpu"), pytest.param("cpu", "cuda", marks=NO_GPU), pytest.param("cuda", "cpu", marks=NO_GPU)]


def _assert_on(device: str, tensors: Iterable[torch.Tensor], what: str) -> None:
    for t in tensors:
        assert t.device.type == device, f"{what}: a tensor of shape {tuple(t.shape)} is on {t.device}, not {device}"


def _optimizer_state(trainer: Trainer) -> list:
    # torch.optim keeps step counts on the CPU (so does pyro-vae's optimizer); the rest is per parameter
    return [v for state in trainer.optimizer.state.values() for k, v in state.items() if torch.is_tensor(v) and k != "step"]


@pytest.mark.parametrize("objective", OBJECTIVE_NAMES)
@pytest.mark.parametrize("device", DEVICES)
def test_every_objective_trains_on_the_device_and_its_checkpoint_reads_on_the_cpu(tmp_path, device, objective):
    cfg = tiny_config(device=device, objective={"name": objective}, training={"epochs": 2, "batch_size": 20, "log_every": 1})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    rows = trainer.train()
    assert all(torch.isfinite(torch.tensor([r["train_objective"], r["test_elbo"], r["test_elbo_stderr"]])).all() for r in rows)
    _assert_on(device, trainer.vae.parameters(), "parameters")
    _assert_on(device, trainer.vae.buffers(), "buffers")
    _assert_on(device, _optimizer_state(trainer), "optimizer state")
    _assert_on(device, [trainer.x_train, trainer.x_test], "data")
    _assert_on(device, [v for v in trainer.objective.state_dict().values() if torch.is_tensor(v)], "objective state (MCEM's chains)")

    on_cpu = load_run(tmp_path / "run", device="cpu")
    for (name, a), b in zip(trainer.vae.state_dict().items(), on_cpu.vae.state_dict().values()):
        assert b.device.type == "cpu" and torch.equal(a.cpu(), b), name


@pytest.mark.parametrize("first,then", DEVICE_PAIRS)
@pytest.mark.parametrize("objective", ["trace_meanfield", "jit_trace", "mcem"])
def test_a_run_resumes_on_another_device(tmp_path, first, then, objective):
    """The README lets a resume change the device: the optimizer's state and MCEM's chains follow
    the parameters there, and training goes on from the checkpoint's epoch."""
    run = tmp_path / "run"
    cfg = tiny_config(device=first, objective={"name": objective}, training={"epochs": 1, "batch_size": 20, "log_every": 1})
    Trainer(cfg, run, progress=False).train()
    cfg = tiny_config(device=then, objective={"name": objective}, training={"epochs": 3, "batch_size": 20, "log_every": 1})
    trainer = Trainer(cfg, run, progress=False)
    rows = trainer.train(resume=True)
    assert [r["epoch"] for r in rows] == [2, 3] and trainer.epoch == 3
    assert all(torch.isfinite(torch.tensor([r["train_objective"], r["test_elbo"]])).all() for r in rows)
    _assert_on(then, trainer.vae.parameters(), "parameters")
    _assert_on(then, _optimizer_state(trainer), "optimizer state")
    _assert_on(then, [v for v in trainer.objective.state_dict().values() if torch.is_tensor(v)], "objective state (MCEM's chains)")


def test_mcem_chains_follow_the_data_to_its_device():
    """MCEM's chains come back from a checkpoint on the CPU; they move to the data's device at the
    next step (here the 'meta' device stands in for a GPU, which this test needs none of)."""
    vae = vae_from_config(tiny_config().model, (6,))
    mcem = MonteCarloEM(num_leapfrog=2, target_accept=0.9, initial_step_size=0.1, m_steps=1, hmc_steps=1)
    mcem._init_chains(vae, 10, torch.device("cpu"))
    chains = mcem.chains.clone()
    mcem.load_state_dict({k: v.clone() for k, v in mcem.state_dict().items()})
    mcem._init_chains(vae, 10, torch.device("meta"))
    assert mcem.chains.device.type == "meta" and mcem.log_step.device.type == "meta"
    assert mcem.chains.shape == chains.shape  # moved, not redrawn


@pytest.mark.parametrize("device", DEVICES)
def test_every_prior_likelihood_and_guide_trains_on_the_device(tmp_path, device):
    cases = [{"prior": c, "likelihood": {"name": "continuous_bernoulli"}} for c in PRIOR_CASES]
    cases += [{"likelihood": c} for c in LIKELIHOOD_CASES]
    cases += [{"guide": c, "likelihood": {"name": "continuous_bernoulli"}} for c in GUIDE_CASES]
    cases += [{"encoder": {"name": "conv", "channels": 4, "hidden": 16}, "decoder": {"name": "conv", "channels": 4, "hidden": 16},
               "likelihood": {"name": "bernoulli"}}]
    for i, model in enumerate(cases):
        binary = model["likelihood"]["name"] == "bernoulli"
        # trains one step (finite ELBOs, parameters moved, finite samples), as for every objective on CPU
        trainer = _train_one_step(tmp_path / f"run{i}", "trace_meanfield", _image_data(binary), device=device, **model)
        _assert_on(device, list(trainer.vae.parameters()) + list(trainer.vae.buffers()), str(model))
        x = trainer.x_test[:3]
        for est in (E.iwae(trainer.vae, x, k=20), E.ais(trainer.vae, x, num_steps=3, num_chains=2, num_leapfrog=2)):
            assert est.per_datapoint.shape == (3,) and torch.isfinite(est.per_datapoint).all(), model
        assert trainer.vae.sample_means(4).device.type == device, model
    # the last case has 8 x 8 images and two latents: every picture applies
    written, skipped = plot_run(trainer.run_dir, trainer.vae, trainer.x_test, trainer.data.y_test)
    names = {p.name for p in written}
    assert {"elbo_curves.png", "samples.png", "reconstructions.png", "manifold.png", "latents.png"} <= names and not skipped


@pytest.fixture
def linear_gaussian():
    truth = LinearGaussian.random(5, 2, 0.5, seed=0)
    x, _ = truth.sample(20, seed=1)
    return truth, x


@pytest.mark.parametrize("device", DEVICES)
def test_estimators_on_the_device_agree_with_the_exact_log_px(linear_gaussian, device):
    truth, x_cpu = linear_gaussian
    vae = E.exact_vae(truth).double()
    with torch.no_grad():  # an inexact guide, so that the estimators have something to do
        vae.encoder[0].bias[:2] += 0.1
    vae = vae.to(device)
    x = x_cpu.to(device)
    exact = truth.log_marginal(x_cpu).mean().item()
    assert abs(E.exact_log_px(vae, x).mean().item() - exact) < 1e-6  # float32 weights, read in float64
    torch.manual_seed(0)
    iw = E.iwae(vae, x, k=2000)
    elbo = E.elbo(vae, x, num_samples=200)
    ais = E.ais(vae, x, num_steps=300, num_chains=16, num_leapfrog=5)
    hmc = E.hmc_marginal_likelihood(vae, x, num_samples=60, num_warmup=80)
    for est in (iw, elbo, ais, hmc):
        assert est.per_datapoint.shape == (20,) and torch.isfinite(est.per_datapoint).all()
    assert elbo.mean < iw.mean <= exact + 0.02 and iw.mean > exact - 0.1
    # seeds 0-13 on the CPU: AIS within 0.07 nats, Appendix D within 0.12
    assert abs(ais.mean - exact) < 0.12 and abs(hmc.mean - exact) < 0.25
    gaps = E.gap_report(vae, x[:5], k=500)["summary"]
    assert gaps["inference_gap"] > 0
    assert abs(gaps["inference_gap"] - gaps["approximation_gap"] - gaps["amortization_gap"]) < 1e-6
    bdmc = E.bdmc(vae, num_points=5, num_steps=50, num_chains=4, num_leapfrog=3)
    assert bdmc["x"].device.type == device and bdmc["lower"].mean <= bdmc["upper"].mean + 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_estimators_on_a_users_own_program_with_a_positive_latent_run_on_the_device(device):
    exact, iw, ais, hmc, bdmc = estimates_beside_the_exact_log_px(GammaPrecision(), seed=4, num_warmup=300, device=device)
    for est in (iw, ais, hmc):
        assert est.per_datapoint.shape == (6,) and torch.isfinite(est.per_datapoint).all()
    assert abs(iw.mean - exact) < 0.05 and abs(ais.mean - exact) < 0.05 and abs(hmc.mean - exact) < 0.05
    assert bdmc["x"].device.type == device and bdmc["lower"].mean <= bdmc["upper"].mean + 0.5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ours,theirs", [(Adagrad, torch.optim.Adagrad), (Adam, torch.optim.Adam), (SGD, torch.optim.SGD)])
def test_optimizers_take_torch_optims_steps_on_the_device(device, ours, theirs):
    """On CUDA the foreach passes run (the fused kernels are taken on the CPU only)."""
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (3, 7)]
    start = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    a = [p.clone().to(device).requires_grad_() for p in start]
    b = [p.clone().to(device).requires_grad_() for p in start]
    options = {"lr": 0.05, "weight_decay": 0.01}
    opt_a, opt_b = ours(a, **options), theirs(b, foreach=True, **options)
    for step in range(10):
        grads = [torch.randn(s, generator=g, dtype=torch.float64).to(device) for s in shapes]
        for params, opt in ((a, opt_a), (b, opt_b)):
            for p, grad in zip(params, grads):
                p.grad = grad.clone()
            opt.step()
    for p, q in zip(a, b):
        assert p.device.type == device and torch.allclose(p, q, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_static_binarization_draws_the_same_pixels_on_every_device(device):
    x = torch.rand(50, 30, generator=torch.Generator().manual_seed(0))
    on_device = binarize(x.to(device), seed=3)
    assert on_device.device.type == device
    assert torch.equal(on_device.cpu(), binarize(x, seed=3))
    assert torch.equal(binarize(x, seed=3), torch.bernoulli(x, generator=torch.Generator().manual_seed(3)))  # the draws runs have always had


@pytest.mark.parametrize("device", DEVICES)
def test_the_command_line_on_the_device(tmp_path, device, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--device", device, "--no-progress",
                 "--set", "training.epochs=2", "--evaluate", "--set", "evaluation.n=10", "--set", "evaluation.k=50"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["device"].startswith(device)
    assert ("gpu" in info["hardware"]) is (device == "cuda")  # the GPU, or the CPU and its kernels, that rounded the numbers
    assert main(["evaluate", str(run), "--device", device, "--estimator", "ais", "--ais-steps", "20", "--ais-chains", "2",
                 "--n", "5", "--no-progress"]) == 0
    assert main(["sample", str(run), "--device", device, "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert main(["plot", str(run), "--device", device]) == 0
    out = capsys.readouterr().out
    assert "iwae on test (n=10" in out and "ais on test (n=5" in out
    for name in ("eval_iwae_k50_test_n10.json", "eval_ais_steps20_chains2_test_n5.json"):
        result = json.loads((run / name).read_text())
        assert result["n"] in (5, 10) and result["stderr"] > 0
