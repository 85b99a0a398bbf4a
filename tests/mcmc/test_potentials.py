"""HMC potentials compiled per shape (pyro_vae.mcmc.potentials): the same values and dU/dz
as Pyro's traces run eagerly, for every registry entry; parameters read afresh; a graph per shape;
eager where compiling is slower or cannot be trusted."""

import warnings

import pyro
import pytest
import torch

from pyro_vae import config as C
from pyro_vae import estimators
from pyro_vae.config.build import vae_from_config
from pyro_vae.mcmc import potentials
from pyro_vae.mcmc.potentials import compiles, guide_log_density, model_log_densities
from pyro_vae.speed import fused_linear
from pyro_vae.traces import guide_log_prob, log_densities
from tests.components.test_registry import (
    GUIDE_CASES,
    LIKELIHOOD_CASES,
    NETWORK_CASES,
    PRIOR_CASES,
)

BASE = {"prior": PRIOR_CASES[0], "likelihood": LIKELIHOOD_CASES[0], "guide": GUIDE_CASES[0], "network": NETWORK_CASES[0]}
# every registry entry once, the others at the paper's choice
CASES = [dict(BASE, **{part: case}) for part, cases in (
    ("prior", PRIOR_CASES), ("likelihood", LIKELIHOOD_CASES), ("guide", GUIDE_CASES), ("network", NETWORK_CASES)
) for case in cases]


@pytest.fixture(autouse=True)
def _no_validation(monkeypatch):
    # as in training and `pyro-vae evaluate`; with validation on, potentials stay eager (tested below)
    monkeypatch.setattr(potentials.switched_on, "value", True)
    with pyro.validation_enabled(False):
        yield


def _vae(case):
    model = {"z_dim": 2, "prior": case["prior"], "likelihood": case["likelihood"], "guide": case["guide"],
             "encoder": case["network"], "decoder": case["network"]}
    vae = vae_from_config(C.from_dict({"name": "t", "data": {"name": "synthetic"}, "model": model}).model, (1, 8, 8))
    vae.register_params = False
    return vae


def _data(case, n=5):
    x = torch.rand(n, 64, generator=torch.Generator().manual_seed(1))
    return torch.bernoulli(x) if case["likelihood"]["name"] == "bernoulli" else x


def _value_and_grad(fn, z):
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        out = fn(z)
        out = out if isinstance(out, tuple) else (out,)
        (grad,) = torch.autograd.grad(sum(o.sum() for o in out), z)
    return [o.detach() for o in out], grad


def _graphs(vae):
    return potentials._GRAPHS.get(vae, {})


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(v["name"] for v in c.values()))
def test_every_registry_entry_compiles_to_the_eager_densities(case):
    vae, x = _vae(case), _data(case)
    z = torch.randn(3, 5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        compiled = [model_log_densities(vae, x), guide_log_density(vae, x)]
        for fn in compiled:
            fn(z)
    assert len(_graphs(vae)) == 2 and all(g is not None for g in _graphs(vae).values())
    eager = [lambda zz: log_densities(vae.model, {"z": zz}, x), lambda zz: guide_log_prob(vae.guide, {"z": zz}, x)]
    z_new = 0.7 * torch.randn(3, 5, 2)  # not the traced point
    for fast, slow in zip(compiled, eager):
        (values, grad), (ref_values, ref_grad) = _value_and_grad(fast, z_new), _value_and_grad(slow, z_new)
        for a, b in zip(values, ref_values):
            assert a.shape == b.shape == (3, 5)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-4)


def test_parameters_are_read_afresh_and_graphs_are_reused_per_shape():
    vae, x = _vae(BASE), _data(BASE)
    z = torch.randn(2, 5, 2)
    densities = model_log_densities(vae, x)
    densities(z)
    (graph,) = _graphs(vae).values()
    with torch.no_grad():  # an M-step, in place as the optimizers update
        for p in vae.decoder.parameters():
            p.add_(0.3)
    for fn in (densities, model_log_densities(vae, x)):  # this E-step's function and the next one's
        for a, b in zip(fn(z), log_densities(vae.model, {"z": z}, x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert list(_graphs(vae).values()) == [graph]  # no new trace for the same shapes
    densities(torch.randn(4, 5, 2))  # other chains: a graph of its own
    model_log_densities(vae, x[:3])(torch.randn(2, 3, 2))  # a smaller last minibatch too
    assert len(_graphs(vae)) == 3


def test_compiling_is_used_where_it_pays_and_switched_off_by_the_setting(monkeypatch):
    vae = _vae(BASE)
    small, large = torch.zeros(2, 50, 2), torch.zeros(2, 300, 2)
    assert compiles(small)
    monkeypatch.setattr(fused_linear.switched_on, "value", True)
    # from MIN_ROWS_WITH_GRAD rows the fused eager layers run instead (faster there)
    assert compiles(large) is not fused_linear.available()
    monkeypatch.setattr(fused_linear.switched_on, "value", False)
    assert compiles(large)
    with pyro.validation_enabled(True):  # argument checks are Python branches on values
        assert not compiles(small)
    monkeypatch.setattr(potentials.switched_on, "value", False)
    assert not compiles(small)
    x = _data(BASE, 50)
    model_log_densities(vae, x)(small)
    assert not _graphs(vae)


def test_the_per_shape_decision_still_follows_validation_and_the_switch(monkeypatch):
    """A density function decides compiled-or-eager once per shape of z, but turning Pyro's
    validation on, or the setting off, between evaluations sends the next one eagerly through
    Pyro's traces again."""
    vae, x = _vae(BASE), _data(BASE)
    python_calls = []

    def counted(vae, z, x):
        python_calls.append(1)
        return potentials._model_densities(vae, z, x)

    density = potentials._Density(vae, counted, x)
    z = torch.randn(2, 5, 2)
    density(z)  # traced and checked: Python runs a few times
    compiled_calls = len(python_calls)
    density(z)
    assert len(python_calls) == compiled_calls  # the graph ran, not the Python
    with pyro.validation_enabled(True):
        density(z)
    assert len(python_calls) == compiled_calls + 1
    monkeypatch.setattr(potentials.switched_on, "value", False)
    density(z)
    assert len(python_calls) == compiled_calls + 2
    monkeypatch.setattr(potentials.switched_on, "value", True)
    for a, b in zip(density(z), log_densities(vae.model, {"z": z}, x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert len(python_calls) == compiled_calls + 2  # compiled again, from the cached decision


def _branching(vae, z, x):
    """A density whose Python code branches on the value of z: a trace cannot follow it."""
    log_p = -0.5 * (z * z).sum(-1)
    return (log_p if bool(z.sum() > 0) else 2 * log_p,)


def test_value_dependent_control_flow_stays_eager_with_a_warning():
    vae, x = _vae(BASE), _data(BASE)
    shape = (2, 5, 2)
    # the check's second point, drawn as potentials draws it; trace at its opposite
    other = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    density = potentials._Density(vae, _branching, x)
    with pytest.warns(RuntimeWarning, match=r"stays eager.*differ from the eager ones"):
        density(-other)
    assert list(_graphs(vae).values()) == [None]
    for z in (-other, other):  # both branches, right
        torch.testing.assert_close(density(z)[0], _branching(vae, z, x)[0])


def test_a_failing_trace_falls_back_to_eager(monkeypatch):
    vae, x = _vae(BASE), _data(BASE)
    z = torch.randn(2, 5, 2)

    def broken(*args, **kwargs):
        raise RuntimeError("tracer broke")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with pytest.warns(RuntimeWarning, match="stays eager.*tracer broke.*PYRO_VAE_COMPILE_POTENTIALS=0"):
        values = model_log_densities(vae, x)(z)
    for a, b in zip(values, log_densities(vae.model, {"z": z}, x)):
        torch.testing.assert_close(a, b)


def test_compiling_leaves_pyros_param_store_alone():
    vae, x = _vae(BASE), _data(BASE)
    vae.register_params = True  # as during MCEM training with a JIT objective
    pyro.clear_param_store()
    model_log_densities(vae, x)(torch.randn(2, 5, 2))
    assert len(_graphs(vae)) == 1
    assert not list(pyro.get_param_store().keys())


def test_estimators_give_the_same_numbers_compiled_and_eager(monkeypatch):
    vae, x = _vae(BASE), _data(BASE, 4)
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(potentials.switched_on, "value", enabled)
        torch.manual_seed(0)
        results[enabled] = (
            estimators.ais(vae, x, num_steps=20, num_chains=3, num_leapfrog=3).per_datapoint,
            estimators.ais(vae, x, num_steps=20, num_chains=3, num_leapfrog=3, start="encoder").per_datapoint,
            estimators.hmc_marginal_likelihood(vae, x, num_samples=10, num_warmup=10, num_leapfrog=3).per_datapoint,
        )
    assert len(_graphs(vae)) >= 3  # the compiled run compiled the model's and the guide's densities
    for a, b in zip(results[True], results[False]):
        # float rounding differs between the two; the chains see the same random numbers
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_a_vae_and_its_graphs_are_freed_together():
    import gc
    import weakref

    vae, x = _vae(BASE), _data(BASE)
    model_log_densities(vae, x)(torch.randn(2, 5, 2))
    assert len(_graphs(vae)) == 1
    alive = weakref.ref(vae)
    del vae
    gc.collect()
    assert alive() is None  # the compiled graph does not keep its VAE (and its own cache entry) alive
