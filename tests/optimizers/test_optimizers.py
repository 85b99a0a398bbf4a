"""pyro-vae's in-place optimizers take exactly torch.optim's steps, share its checkpoint format and
never import torch._dynamo."""

import copy
import subprocess
import sys

import pytest
import torch

from pyro_vae.optimizers import inplace as optimizers
from pyro_vae.optimizers.inplace import SGD, Adagrad, Adam

CASES = [
    (Adagrad, torch.optim.Adagrad, dict(lr=0.1)),
    (Adagrad, torch.optim.Adagrad, dict(lr=0.1, weight_decay=0.5, initial_accumulator_value=0.1)),
    (Adam, torch.optim.Adam, dict(lr=0.01)),
    (Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.1)),
    (SGD, torch.optim.SGD, dict(lr=0.01)),
    (SGD, torch.optim.SGD, dict(lr=0.01, momentum=0.9, weight_decay=0.1)),
]


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(3, generator=g))]


def _steps(opt, params, n, seed, skip_second_at=None):
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for j, (p, gr) in enumerate(zip(params, grads)):
            p.grad = None if (j == 1 and i == skip_second_at) else gr
        opt.step()


@pytest.fixture(params=["fused", "foreach"])
def kernels(request, monkeypatch):
    """Both ways of stepping: torch's fused CPU kernels (the CPU default) and the foreach passes
    (CUDA, or tensors the fused kernels do not take)."""
    if request.param == "foreach":
        monkeypatch.setattr(optimizers, "_fused_cpu_kernel_applies", lambda params, steps: False)
    return request.param


@pytest.mark.parametrize("ours,theirs,options", CASES)
def test_same_steps_as_torch_optim(ours, theirs, options, kernels):
    a, b = _params(0), _params(0)
    opt_a, opt_b = ours(a, **options), theirs(b, **options)
    # a parameter without a gradient at one step falls behind in its step count (Adam's bias correction)
    _steps(opt_a, a, 15, seed=1, skip_second_at=3)
    _steps(opt_b, b, 15, seed=1, skip_second_at=3)
    for p, q in zip(a, b):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a, b))  # .grad is never modified


@pytest.mark.parametrize("ours,theirs,options", CASES)
def test_torch_optim_checkpoints_resume_in_ours(ours, theirs, options, kernels):
    """Runs checkpointed by earlier versions (torch.optim) resume with the same steps."""
    a, b = _params(0), _params(0)
    opt_a, opt_b = ours(a, **options), theirs(b, **options)
    _steps(opt_a, a, 5, seed=1)
    _steps(opt_b, b, 5, seed=1)
    opt_a.load_state_dict(copy.deepcopy(opt_b.state_dict()))  # as if read from disk
    _steps(opt_a, a, 5, seed=2)
    _steps(opt_b, b, 5, seed=2)
    for p, q in zip(a, b):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="lr"):
        Adagrad(_params(0), lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        Adam(_params(0), betas=(0.9, 1.0))


def test_a_bad_optimizer_option_is_reported_in_the_configs_terms_beside_a_weight_prior():
    """The weight prior reaches the optimizer as extra weight decay; an error names the options the
    config gave and says where the rest came from, not a weight_decay nobody wrote."""
    from pyro_vae.errors import ConfigError
    from pyro_vae.optimizers.builders import build_optimizer

    with pytest.raises(ConfigError, match=r"optimizer 'adagrad' with options \{'lr': -1\} \(plus weight_decay 4 from "
                                          r"objective.weight_prior_std 0.5\): Adagrad: lr"):
        build_optimizer("adagrad", {"lr": -1}, _params(0), weight_prior_std=0.5)
    with pytest.raises(ConfigError, match=r"optimizer 'adagrad' with options \{'lr': -1\}: Adagrad: lr"):
        build_optimizer("adagrad", {"lr": -1}, _params(0), weight_prior_std=None)
    opt = build_optimizer("adagrad", {"lr": 0.1, "weight_decay": 0.5}, _params(0), weight_prior_std=0.5)
    assert opt.param_groups[0]["weight_decay"] == 4.5  # the config's own decay and the prior's, added


def test_schedulers_drive_the_learning_rate():
    opt = Adagrad(_params(0), lr=0.1)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    _steps(opt, opt.param_groups[0]["params"], 1, seed=0)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_no_dynamo_import():
    """torch.optim imports torch._dynamo (about 1 s) on its first use; ours must not."""
    code = (
        "import sys, torch\n"
        "from pyro_vae.optimizers.inplace import Adagrad\n"
        "p = [torch.nn.Parameter(torch.ones(3))]\n"
        "opt = Adagrad(p, lr=0.1); p[0].grad = torch.ones(3); opt.step(); opt.zero_grad()\n"
        "opt.load_state_dict(opt.state_dict())\n"
        "sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5); opt.step(); sched.step()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


@pytest.mark.parametrize("ours", [Adagrad, Adam, SGD])
def test_closure_runs_with_gradients_and_its_loss_is_returned(ours):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = ours([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    with torch.no_grad():  # a caller under no_grad still gets gradients inside the closure
        loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.0) and w.abs().sum().item() < 3.0


def test_fused_kernels_run_on_cpu_float_parameters():
    assert optimizers._fused_cpu_kernels_available() == (tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4))
    params = _params(0)
    steps = [torch.tensor(0.0) for _ in params]
    assert optimizers._fused_cpu_kernel_applies(params, steps)
    assert not optimizers._fused_cpu_kernel_applies(params, [s.double() for s in steps])  # torch.optim under float64 default
    assert not optimizers._fused_cpu_kernel_applies([params[0], params[1].double()], steps)
