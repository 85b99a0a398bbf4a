"""The lean ELBOs compute exactly Pyro's Trace_ELBO / TraceMeanField_ELBO losses and gradients."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.config.build import vae_from_config
from pyro_vae.objectives.trace_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from tests.conftest import tiny_config

PAIRS = [(LeanTrace_ELBO, Trace_ELBO), (LeanTraceMeanField_ELBO, TraceMeanField_ELBO)]


@pytest.fixture(autouse=True)
def no_validation():
    """The lean path runs only with validation off (as in training); with it on, Pyro's own does."""
    from pyro.infer.util import is_validation_enabled

    before = is_validation_enabled()
    pyro.enable_validation(False)
    yield
    pyro.enable_validation(before)


def _loss_and_grads(elbo, vae, *args, seed=0, **kwargs):
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(vae.model, vae.guide, *args, **kwargs)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in vae.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lean_cls,pyro_cls", PAIRS)
@pytest.mark.parametrize(
    "prior,guide,particles",
    [
        ("standard_normal", "diag_normal", 1),
        ("standard_normal", "diag_normal", 3),  # vectorized particles
        ("learned_normal", "full_normal", 1),
        ("mixture_of_gaussians", "diag_normal", 2),  # no analytic KL: Monte Carlo terms
        ("laplace", "iaf", 1),
    ],
)
def test_lean_elbo_equals_pyro(lean_cls, pyro_cls, prior, guide, particles):
    vae = vae_from_config(tiny_config(model={"prior": {"name": prior}, "guide": {"name": guide}}).model, (6,))
    x, idx = torch.randn(10, 6), torch.arange(3, 13)
    kw = dict(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    lean_loss, lean_grads = _loss_and_grads(lean_cls(**kw), vae, x, idx, num_data=100)
    pyro_loss, pyro_grads = _loss_and_grads(pyro_cls(**kw), vae, x, idx, num_data=100)
    assert torch.allclose(lean_loss, pyro_loss, rtol=1e-5, atol=1e-4)
    assert lean_grads.keys() == pyro_grads.keys() and lean_grads
    for k in lean_grads:
        assert torch.allclose(lean_grads[k], pyro_grads[k], rtol=1e-4, atol=1e-5), k


def test_lean_elbo_sequential_particles_average():
    vae = vae_from_config(tiny_config().model, (6,))
    x = torch.randn(10, 6)
    lean, ref = LeanTrace_ELBO(num_particles=4), Trace_ELBO(num_particles=4)
    assert torch.allclose(_loss_and_grads(lean, vae, x)[0], _loss_and_grads(ref, vae, x)[0], rtol=1e-5)


def _discrete_model(x):
    with pyro.plate("data", x.shape[0]):
        c = pyro.sample("c", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(c * 2.0, 1.0), obs=x)


def _discrete_guide(x):
    p = pyro.param("p", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("c", dist.Bernoulli(p))


def test_lean_trace_elbo_keeps_score_function_terms_for_discrete_guides():
    pyro.clear_param_store()
    x = torch.randn(7)
    grads = []
    for cls in (LeanTrace_ELBO, Trace_ELBO):
        pyro.set_rng_seed(3)
        loss = cls().differentiable_loss(_discrete_model, _discrete_guide, x)
        (g,) = torch.autograd.grad(loss, [pyro.param("p").unconstrained()])
        grads.append((loss.detach(), g))
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1])
    assert grads[0][1].abs() > 0  # the score-function gradient is there


def test_lean_meanfield_elbo_rejects_discrete_guides_clearly():
    pyro.clear_param_store()
    with pytest.raises(NotImplementedError, match="reparameterized"):
        LeanTraceMeanField_ELBO().differentiable_loss(_discrete_model, _discrete_guide, torch.randn(7))


def test_lean_elbo_defers_to_pyro_with_validation(monkeypatch):
    vae = vae_from_config(tiny_config().model, (6,))
    called = []
    monkeypatch.setattr(Trace_ELBO, "differentiable_loss", lambda self, *a, **k: called.append(1) or torch.zeros(()))
    pyro.enable_validation(True)
    LeanTrace_ELBO().differentiable_loss(vae.model, vae.guide, torch.randn(4, 6))
    assert called == [1]


@pytest.mark.parametrize("lean_cls", [LeanTrace_ELBO, LeanTraceMeanField_ELBO])
def test_lean_elbo_never_reads_a_value_back_to_the_host(lean_cls, monkeypatch):
    """Pyro's ELBOs call .item() at every step (a device synchronisation on CUDA); these must not."""
    vae = vae_from_config(tiny_config().model, (6,))
    x, idx = torch.randn(10, 6), torch.arange(10)

    def no_item(self):
        raise AssertionError(".item() called inside the loss")

    monkeypatch.setattr(torch.Tensor, "item", no_item)
    loss = lean_cls(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x, idx, num_data=100)
    loss.backward()
    with pytest.raises(AssertionError, match="item"):  # and Pyro's own does
        (Trace_ELBO if lean_cls is LeanTrace_ELBO else TraceMeanField_ELBO)(max_plate_nesting=1).differentiable_loss(
            vae.model, vae.guide, x, idx, num_data=100)


@pytest.mark.parametrize("jit_name,eager_name", [("jit_trace_meanfield", "trace_meanfield"), ("jit_trace", "trace")])
def test_jit_objectives_draw_the_same_z_as_the_eager_ones_from_the_first_step(jit_name, eager_name):
    """Pyro's JIT runs the programs twice more on its first call; that happens on a forked random
    stream, so a JIT run and an eager run with the same seed see the same z at every step."""
    from pyro_vae.objectives import OBJECTIVES

    vae = vae_from_config(tiny_config().model, (6,))
    x = torch.randn(50, 6)
    jit, eager = OBJECTIVES.build(jit_name, {}), OBJECTIVES.build(eager_name, {})
    with pyro.validation_enabled(False):
        for batch in (20, 20, 10):  # the first (compiling) call, a compiled one, another batch size
            idx = torch.arange(batch)
            losses, next_draws = [], []
            for objective in (jit, eager):
                torch.manual_seed(3)
                losses.append(objective.loss(vae, x[:batch], idx, 50))
                next_draws.append(torch.rand(3))  # the stream is left where the eager step leaves it
            torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-3)
            assert torch.equal(next_draws[0], next_draws[1])


@pytest.mark.parametrize("jit_name,eager_name", [("jit_trace_meanfield", "trace_meanfield"), ("jit_trace", "trace")])
@pytest.mark.parametrize("prior,guide", [("standard_normal", "diag_normal"), ("standard_normal", "iaf"), ("mixture_of_gaussians", "full_normal")])
def test_jit_objectives_have_the_gradients_of_the_eager_ones(jit_name, eager_name, prior, guide):
    """Same z, same loss, same gradient. Pyro 1.9's JitTrace_ELBO.differentiable_loss doubles the
    gradient (the compiled loss keeps its graph next to the surrogate's): Adagrad would hide that,
    SGD and a weight prior would not."""
    from pyro_vae.objectives import OBJECTIVES

    vae = vae_from_config(tiny_config(model={"prior": {"name": prior}, "guide": {"name": guide}}).model, (6,))
    x, idx = torch.randn(20, 6), torch.arange(20)
    jit, eager = OBJECTIVES.build(jit_name, {}), OBJECTIVES.build(eager_name, {})
    jit.loss(vae, x, idx, 50)  # the compiling call
    results = []
    for objective in (jit, eager):
        vae.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        loss = objective.loss(vae, x, idx, 50)
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in vae.named_parameters() if p.grad is not None}))
    (jit_loss, jit_grads), (eager_loss, eager_grads) = results
    torch.testing.assert_close(jit_loss, eager_loss, rtol=1e-5, atol=1e-3)
    assert jit_grads.keys() == eager_grads.keys() and eager_grads
    for k in eager_grads:
        torch.testing.assert_close(jit_grads[k], eager_grads[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("jit_name", ["jit_trace_meanfield", "jit_trace"])
def test_jit_objectives_run_their_graph_unoptimized_and_restore_the_setting(jit_name, monkeypatch):
    """The compiled ELBO runs without TorchScript's optimization passes (they cost a first step
    about 65 ms and gain nothing here); the process-wide setting is put back, also after an error."""
    from pyro_vae.objectives import OBJECTIVES

    vae = vae_from_config(tiny_config().model, (6,))
    x, idx = torch.randn(20, 6), torch.arange(20)
    objective = OBJECTIVES.build(jit_name, {})
    seen = []
    real_trace = torch.jit.trace

    def recording_trace(*args, **kwargs):
        compiled = real_trace(*args, **kwargs)

        def run(*a, **k):
            seen.append(torch._C._get_graph_executor_optimize())
            return compiled(*a, **k)

        return run

    monkeypatch.setattr(torch.jit, "trace", recording_trace)
    with pyro.validation_enabled(False):
        for _ in range(3):  # the compiling call, then compiled ones
            objective.loss(vae, x, idx, 50).backward()
        assert seen and not any(seen)
        assert torch._C._get_graph_executor_optimize()  # the default, restored
        with torch.jit.optimized_execution(False):  # a user's own setting survives a step
            objective.loss(vae, x, idx, 50)
            assert not torch._C._get_graph_executor_optimize()
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            objective.loss(vae, x[:, :3], idx, 50)  # wrong width: fails inside
        assert torch._C._get_graph_executor_optimize()


def test_iwae_objective_equals_pyros_renyi_elbo_on_a_full_batch():
    """Without subsampling (scale 1) the IWAE objective is Pyro's RenyiELBO(alpha=0): the same
    loss and gradients from the same draws. (With a minibatch, Pyro's puts the N/M scale inside the
    log-sum-exp; ours scales the per-datapoint bounds afterwards.)"""
    from pyro.infer import RenyiELBO

    from pyro_vae.objectives import OBJECTIVES

    vae = vae_from_config(tiny_config().model, (6,))
    x = torch.randn(20, 6)
    results = []
    for which in ("ours", "pyro"):
        vae.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        if which == "ours":
            loss = OBJECTIVES.build("iwae", {"num_particles": 5}).loss(vae, x, None, 20)
            loss.backward()
            loss = loss.item()
        else:
            loss = RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1).loss_and_grads(vae.model, vae.guide, x)
        results.append((loss, {k: p.grad.clone() for k, p in vae.named_parameters() if p.grad is not None}))
    (ours_loss, ours_grads), (pyro_loss, pyro_grads) = results
    assert ours_loss == pytest.approx(pyro_loss, rel=1e-5)
    assert ours_grads.keys() == pyro_grads.keys() and ours_grads
    for k in ours_grads:
        torch.testing.assert_close(ours_grads[k], pyro_grads[k], rtol=1e-4, atol=1e-5, msg=k)
