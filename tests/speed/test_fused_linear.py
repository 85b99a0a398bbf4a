"""oneDNN's fused Linear + activation: the same values and gradients as torch's layers, and where it applies."""

import pytest
import torch


@pytest.mark.parametrize("name,fn", [("tanh", torch.tanh), ("relu", torch.relu)])
def test_activations_work_in_place_only_without_gradients(name, fn):
    from pyro_vae.components.networks import ACTIVATIONS

    act = ACTIVATIONS[name]()
    h = torch.randn(5, 4, requires_grad=True)
    out = act(h)  # with gradients: a new tensor, the input untouched, gradients flow
    out.sum().backward()
    assert out is not h and torch.equal(out, fn(h.detach())) and h.grad is not None
    pre = torch.randn(5, 4)
    expected = fn(pre)
    with torch.no_grad():
        again = act(pre)
    assert again is pre and torch.equal(again, expected)  # overwritten: no new allocation


def _watch_fused_calls(monkeypatch) -> list:
    """Record the activation of every fused product the networks run from now on."""
    from pyro_vae.speed import fused_linear

    fused_linear.available()  # probed (and cached) before the op is watched
    calls: list = []
    real = fused_linear._op
    monkeypatch.setattr(fused_linear, "_op", lambda *a: calls.append(a[-1]) or real(*a))
    return calls


@pytest.fixture
def fused_layers_on(monkeypatch):
    """The fused layers switched on whatever PYRO_VAE_FUSED_LINEAR says (the tests of the fused
    path itself; the rest of the suite runs either way)."""
    from pyro_vae.speed import fused_linear

    monkeypatch.setattr(fused_linear.switched_on, "value", True)


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus", "elu"])
@pytest.mark.parametrize("hidden", [[], [80], [80, 30], [80, 70]])
def test_mlp_evaluates_with_fused_layers_to_the_same_values(monkeypatch, fused_layers_on, activation, hidden):
    """Without gradients the MLP runs each wide Linear and its activation as one oneDNN product
    (when this torch build has it); the values are those of the layer-by-layer network."""
    from pyro_vae.components import networks
    from pyro_vae.speed import fused_linear

    net = networks.mlp(in_dim=6, out_dim=90, x_shape=(90,), role="decoder", hidden=hidden, activation=activation)
    z = torch.randn(7, 3, 6)
    calls = _watch_fused_calls(monkeypatch)
    layer_by_layer = net(z)  # gradients on, 21 rows: the plain path
    assert calls == []
    with torch.no_grad():
        fused = net(z)
    assert fused.shape == (7, 3, 90)
    assert torch.allclose(fused, layer_by_layer, atol=1e-5)
    if fused_linear.available():
        act = activation if activation in ("tanh", "relu") else "none"
        # layers narrower than MIN_OUTPUTS (the 30-wide one) stay plain
        assert calls == [act for h in hidden if h >= fused_linear.MIN_OUTPUTS] + ["none"]
    else:
        assert calls == []


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus"])
def test_fused_mlp_gradients_equal_the_plain_layers(monkeypatch, fused_layers_on, activation):
    """With gradients and enough rows (a batch-1000 step, HMC's chains) the fused layers run
    through their own autograd.Function: values, first and second derivatives are those of the
    plain layers, for the input and every parameter."""
    from pyro_vae.components import networks
    from pyro_vae.speed import fused_linear

    net = networks.mlp(in_dim=5, out_dim=70, x_shape=(70,), role="decoder", hidden=[80], activation=activation)
    z = torch.randn(2, fused_linear.MIN_ROWS_WITH_GRAD, 5, requires_grad=True)
    params = list(net.parameters())

    def derivatives():
        y = net(z)
        first = torch.autograd.grad((y * y).sum(), [z] + params, create_graph=True)
        second = torch.autograd.grad(first[0].pow(2).sum(), [z] + params)  # d/d(.) |dL/dz|^2
        return [y] + list(first) + list(second)

    calls = _watch_fused_calls(monkeypatch)
    fused = derivatives()
    if fused_linear.available():
        assert len(calls) == 2
    monkeypatch.setattr(fused_linear.switched_on, "value", False)
    plain = derivatives()
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def test_input_gradients_only_leaves_parameters_out_of_the_graph(monkeypatch, fused_layers_on):
    """Inside ``input_gradients_only`` (the HMC potential's dU/dz) the fused layers take their
    parameters as constants; dU/dz is unchanged."""
    from pyro_vae.components import networks
    from pyro_vae.speed import fused_linear

    net = networks.mlp(in_dim=5, out_dim=70, x_shape=(70,), role="decoder", hidden=[80])
    z = torch.randn(fused_linear.MIN_ROWS_WITH_GRAD, 5, requires_grad=True)
    (plain_grad,) = torch.autograd.grad(net(z).pow(2).sum(), z)
    with fused_linear.input_gradients_only():
        y = net(z)
    assert not fused_linear._INPUT_GRADIENTS_ONLY.active  # restored on exit
    (grad,) = torch.autograd.grad(y.pow(2).sum(), z)
    assert torch.allclose(grad, plain_grad, rtol=1e-4, atol=1e-6)
    if fused_linear.available():
        with fused_linear.input_gradients_only():
            net(z).pow(2).sum().backward()
        assert all(p.grad is None for p in net.parameters())


def test_fused_mlp_path_is_skipped_inside_plain_layers_and_when_switched_off(monkeypatch):
    from pyro_vae.components import networks
    from pyro_vae.speed import fused_linear

    net = networks.mlp(in_dim=4, out_dim=70, x_shape=(70,), role="decoder", hidden=[80])
    calls = _watch_fused_calls(monkeypatch)
    with torch.no_grad(), fused_linear.plain_layers():
        net(torch.randn(2, 4))
    assert calls == [] and not fused_linear._PLAIN_LAYERS.active
    monkeypatch.setattr(fused_linear.switched_on, "value", False)
    with torch.no_grad():
        net(torch.randn(2, 4))
    net(torch.randn(1000, 4))
    assert calls == []


def test_fused_mlp_path_leaves_cpu_autocast_to_torchs_layers(monkeypatch):
    from pyro_vae.components import networks

    net = networks.mlp(in_dim=4, out_dim=70, x_shape=(70,), role="decoder", hidden=[80])
    calls = _watch_fused_calls(monkeypatch)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(3, 4))
    assert calls == [] and out.dtype == torch.bfloat16


def test_fused_linear_probe_reports_a_missing_op_as_unavailable(monkeypatch):
    from pyro_vae.components import networks
    from pyro_vae.speed import fused_linear

    def missing(*args):
        raise RuntimeError("No such operator mkldnn::_linear_pointwise")

    fused_linear.available.cache_clear()
    monkeypatch.setattr(fused_linear, "_op", missing)
    try:
        assert fused_linear.available() is False
        net = networks.mlp(in_dim=4, out_dim=70, x_shape=(70,), role="decoder", hidden=[80])
        with torch.no_grad():
            assert net(torch.randn(2, 4)).shape == (2, 70)  # falls back to the plain layers
    finally:
        fused_linear.available.cache_clear()
