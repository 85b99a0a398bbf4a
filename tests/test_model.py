"""Model math: analytic KL, the ELBO of a linear-Gaussian model in closed form, N/M scaling."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.estimators import exact_vae
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.traces import log_importance_weights


def test_gaussian_kl_matches_appendix_b_and_monte_carlo():
    torch.manual_seed(0)
    mu, log_var = torch.randn(4, 3), torch.randn(4, 3) * 0.5
    q = dist.Normal(mu, (0.5 * log_var).exp()).to_event(1)
    p = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
    analytic = torch.distributions.kl_divergence(q, p)
    appendix_b = -0.5 * (1 + log_var - mu**2 - log_var.exp()).sum(-1)
    z = q.rsample((200000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(analytic, appendix_b, atol=1e-5)
    assert torch.allclose(analytic, monte_carlo, atol=0.03)


def _closed_form_elbo(truth: LinearGaussian, x, m, cov_q):
    """ELBO of q = N(m, cov_q) for the linear-Gaussian model, in closed form."""
    W, b, s2 = truth.W, truth.b, truth.noise_std**2
    D, d = W.shape
    resid = x - m @ W.T - b
    e_loglik = -0.5 * D * math.log(2 * math.pi * s2) - ((resid**2).sum(-1) + torch.trace(W @ cov_q @ W.T)) / (2 * s2)
    e_logprior = -0.5 * d * math.log(2 * math.pi) - 0.5 * ((m**2).sum(-1) + torch.trace(cov_q))
    entropy = 0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * torch.logdet(cov_q)
    return e_loglik + e_logprior + entropy


def test_elbo_of_linear_gaussian_matches_closed_form():
    torch.manual_seed(0)
    truth = LinearGaussian.random(5, 2, 0.5, seed=3)
    vae = exact_vae(truth).double()
    x, _ = truth.sample(30, seed=4)
    # With the exact posterior as guide, ELBO = log p(x) for every sample.
    log_w = log_importance_weights(vae.model, vae.guide, x, num_particles=3)
    assert torch.allclose(log_w, truth.log_marginal(x).expand(3, -1), atol=1e-5)
    # Perturb the guide: the Monte Carlo ELBO matches the closed form, and both ELBO losses agree.
    with torch.no_grad():
        vae.encoder[0].bias[:2] += 0.4
        vae.encoder[0].bias[2:4] -= 0.3
    q = vae.encode(x)
    closed = _closed_form_elbo(truth, x, q.loc, q.covariance_matrix[0])
    mc = log_importance_weights(vae.model, vae.guide, x, num_particles=20000).mean(0)
    assert torch.allclose(mc, closed, atol=0.05)
    assert (closed < truth.log_marginal(x)).all()
    loss = Trace_ELBO(num_particles=20000, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    assert abs(-loss.item() - closed.sum().item()) < 0.05 * 30


def test_meanfield_elbo_uses_analytic_kl_for_diag_guide():
    from .conftest import tiny_config
    from pyro_vae.config.build import vae_from_config

    cfg = tiny_config()
    vae = vae_from_config(cfg.model, (6,))
    x = torch.randn(10, 6)
    torch.manual_seed(1)
    mf = TraceMeanField_ELBO(num_particles=20000, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    torch.manual_seed(1)
    mc = Trace_ELBO(num_particles=20000, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    assert abs(mf.item() - mc.item()) / abs(mc.item()) < 0.01


def test_subsample_scaling_is_n_over_m():
    from .conftest import tiny_config
    from pyro_vae.objectives import OBJECTIVES  # noqa: F401
    from pyro_vae.components.registry import OBJECTIVES as REG
    from pyro_vae.config.build import vae_from_config

    vae = vae_from_config(tiny_config().model, (6,))
    x = torch.randn(10, 6)
    for name in ("trace_meanfield", "iwae"):
        objective = REG.build(name, {})
        torch.manual_seed(2)
        unscaled = objective.loss(vae, x, None, 10)
        torch.manual_seed(2)
        scaled = objective.loss(vae, x, torch.arange(10), 1000)
        assert torch.allclose(scaled, unscaled * 100, rtol=1e-5), name


def test_model_and_guide_work_with_plain_pyro_svi():
    """Users may drive the model and guide with Pyro's own SVI and pyro.optim: every parameter
    (generative ones registered in the model, recognition ones in the guide) must be trained."""
    import pyro
    from pyro.infer import SVI

    from pyro_vae.config.build import vae_from_config

    from .conftest import tiny_config

    vae = vae_from_config(tiny_config().model, (6,))
    before = {k: v.detach().clone() for k, v in vae.named_parameters()}
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.01}), TraceMeanField_ELBO())
    x = torch.randn(10, 6)
    for _ in range(2):
        svi.step(x)
    changed = {k for k, v in vae.named_parameters() if not torch.equal(v, before[k])}
    assert changed == set(before)


def test_jit_objectives_compile_once():
    from pyro_vae.config.build import vae_from_config
    from pyro_vae.components.registry import OBJECTIVES as REG

    from .conftest import tiny_config

    vae = vae_from_config(tiny_config().model, (6,))
    x = torch.randn(10, 6)
    idx = torch.arange(10)
    for name in ("jit_trace", "jit_trace_meanfield"):
        objective = REG.build(name, {})
        losses = [objective.loss(vae, x, idx, 100) for _ in range(3)]
        elbo = objective.elbo
        compiled = getattr(elbo, "_differentiable_loss", None) or elbo._loss_and_surrogate_loss
        assert len(compiled.compiled) == 1, name  # one trace, reused by every step
        assert all(torch.isfinite(v) for v in losses)


def test_bernoulli_likelihood_log_prob_equals_torch_in_every_branch():
    """The likelihood's cheaper log-prob (without gradients) and its gradient path agree with
    torch's Bernoulli().to_event(1), for same-shape, broadcast and larger-than-logits values and
    soft targets, also after the expansion a plate applies."""
    from pyro_vae.components.likelihoods import IndependentLogitBernoulli

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 10, generator=g) * 4
    binary = torch.bernoulli(torch.full((4, 10), 0.4), generator=g)
    soft = torch.rand(3, 4, 10, generator=g)
    cases = [(logits, binary.expand(3, 4, 10).clone()), (logits, binary), (logits, soft), (logits[0], torch.bernoulli(soft))]
    for lg, value in cases:
        expected = dist.Bernoulli(logits=lg, validate_args=False).to_event(1).log_prob(value)
        with torch.no_grad():
            fast = IndependentLogitBernoulli(lg, validate_args=False).log_prob(value)
        assert fast.shape == expected.shape and torch.allclose(fast, expected, atol=1e-4)
        lg_req = lg.clone().requires_grad_(True)
        out = IndependentLogitBernoulli(lg_req, validate_args=False).log_prob(value)
        (grad,) = torch.autograd.grad(out.sum(), lg_req)
        lg_ref = lg.clone().requires_grad_(True)
        ref = dist.Bernoulli(logits=lg_ref, validate_args=False).to_event(1).log_prob(value)
        (grad_ref,) = torch.autograd.grad(ref.sum(), lg_ref)
        assert torch.allclose(out, expected, atol=1e-4) and torch.allclose(grad, grad_ref, atol=1e-6)
    expanded = IndependentLogitBernoulli(logits[0, 0]).expand((5,))
    assert isinstance(expanded, IndependentLogitBernoulli) and expanded.batch_shape == (5,) and expanded.event_shape == (10,)
    assert torch.allclose(expanded.log_prob(binary[0]), dist.Bernoulli(logits=logits[0, 0]).to_event(1).log_prob(binary[0]))


def test_jit_objective_scales_a_short_last_batch_like_the_uncompiled_one():
    """The compiled graph is traced on one batch size; a short last batch must still be scaled by
    N/M with its own M (the plate's subsample size must not be frozen into the graph)."""
    from pyro_vae.config.build import vae_from_config
    from pyro_vae.components.registry import OBJECTIVES as REG

    from .conftest import tiny_config

    torch.manual_seed(0)
    vae = vae_from_config(tiny_config().model, (6,))
    vae.register_params = True
    x = torch.randn(10, 6)
    jit, lean = REG.build("jit_trace_meanfield", {}), REG.build("trace_meanfield", {})
    jit.loss(vae, x, torch.arange(10), 1000)  # compiled on batch 10

    def mean_loss(objective, m, n=300):
        with torch.no_grad():
            return sum(objective.loss(vae, x[:m], torch.arange(m), 1000).item() for _ in range(n)) / n

    for m in (7, 3):
        assert mean_loss(jit, m) == pytest.approx(mean_loss(lean, m), rel=0.01)


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


def test_kl_against_the_standard_normal_prior_equals_torchs_general_form():
    from torch.distributions import kl_divergence

    from pyro_vae.components.priors import StandardNormal, UnitNormal

    prior = StandardNormal(4)()
    assert isinstance(prior.base_dist, UnitNormal)
    loc = torch.randn(6, 4, requires_grad=True)
    log_scale = torch.randn(6, 4, requires_grad=True)
    general = dist.Normal(torch.zeros(4), torch.ones(4)).to_event(1)
    for shape in ((6,), (3, 6)):  # as the data plate expands it, and with an extra particle dim
        kls = []
        for p in (prior, general):
            q = dist.Normal(loc, log_scale.exp()).to_event(1)
            kl = kl_divergence(q, p.expand(shape))
            kls.append((kl, torch.autograd.grad(kl.sum(), [loc, log_scale])))
        (kl, grads), (ref, ref_grads) = kls
        assert kl.shape == ref.shape == shape and torch.allclose(kl, ref, atol=1e-5)
        assert all(torch.allclose(g, r, atol=1e-5) for g, r in zip(grads, ref_grads))


def test_standard_normal_prior_log_density_equals_torchs_normal():
    """UnitNormal's short log density: same values, gradients and broadcast shapes as Normal(0, 1),
    for values smaller than, equal to and larger than the (plate-expanded) batch shape."""
    from pyro_vae.components.priors import StandardNormal

    prior, general = StandardNormal(4)(), dist.Normal(torch.zeros(4), torch.ones(4)).to_event(1)
    for batch, value_shape in (((6,), (6, 4)), ((6,), (3, 6, 4)), ((3, 6), (6, 4)), ((), (4,))):
        z = torch.randn(value_shape, requires_grad=True)
        out, ref = prior.expand(batch).log_prob(z), general.expand(batch).log_prob(z)
        assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-6)
        (g,), (g_ref,) = torch.autograd.grad(out.sum(), [z]), torch.autograd.grad(ref.sum(), [z])
        assert torch.allclose(g, g_ref, atol=1e-6)
    with pytest.raises(ValueError):  # validation still applies when it is on
        StandardNormal(2)().base_dist.__class__(torch.zeros(2), torch.ones(2), validate_args=True).log_prob(torch.tensor([float("nan"), 0.0]))


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
    from pyro_vae.speed import fused_linear
    from pyro_vae.components import networks

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
    from pyro_vae.speed import fused_linear
    from pyro_vae.components import networks

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
    from pyro_vae.speed import fused_linear
    from pyro_vae.components import networks

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
    from pyro_vae.speed import fused_linear
    from pyro_vae.components import networks

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
    from pyro_vae.speed import fused_linear
    from pyro_vae.components import networks

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


def test_lean_normal_log_density_equals_torchs_normal():
    """The guides' Normal: same log density and gradients (in loc, scale and the value) as torch's,
    before and after a plate's expansion, for values smaller than, equal to and larger than the
    batch shape; it keeps its type when expanded, and the analytic KLs still dispatch to Normal's."""
    from torch.distributions import kl_divergence

    from pyro_vae.components.distributions import LeanNormal
    from pyro_vae.components.priors import StandardNormal

    g = torch.Generator().manual_seed(0)
    for built, batch, value_shape in (((6, 4), None, (6, 4)), ((1, 4), (6, 1), (6, 1, 4)), ((6, 4), (3, 6), (6, 4)), ((6, 4), (6,), (2, 6, 4)), ((4,), None, (4,))):
        loc = torch.randn(built, generator=g).requires_grad_(True)
        log_scale = torch.randn(built, generator=g).requires_grad_(True)
        z = (torch.randn(value_shape, generator=g) * 2).requires_grad_(True)
        results = []
        for cls in (LeanNormal, dist.Normal):
            d = cls(loc, log_scale.exp()).to_event(1)
            if batch is not None:
                d = d.expand(batch)
                assert isinstance(d.base_dist, cls)
            out = d.log_prob(z)
            results.append((out, torch.autograd.grad(out.sum(), [loc, log_scale, z])))
        (out, grads), (ref, ref_grads) = results
        assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, ref_grads))
    q_args = (torch.randn(6, 4, generator=g), torch.rand(6, 4, generator=g) + 0.5)
    for p in (StandardNormal(4)().expand((6,)), dist.Normal(torch.randn(4, generator=g), torch.ones(4)).to_event(1).expand((6,))):
        kl = kl_divergence(LeanNormal(*q_args).to_event(1), p)
        assert torch.allclose(kl, kl_divergence(dist.Normal(*q_args).to_event(1), p), atol=1e-5)
    with pytest.raises(ValueError):  # validation still applies when it is on
        LeanNormal(torch.zeros(2), torch.ones(2), validate_args=True).log_prob(torch.tensor([float("nan"), 0.0]))


def test_expanding_to_its_own_batch_shape_returns_the_same_distribution():
    """Pyro's plates expand every site's distribution, mostly to its own shape: the guides' Normal
    and the Bernoulli likelihood then hand back themselves (no new views or autograd nodes); to any
    other shape they expand as torch does, and keep their types."""
    from pyro_vae.components.distributions import LeanNormal
    from pyro_vae.components.likelihoods import IndependentLogitBernoulli, LogitBernoulli

    loc, scale, logits = torch.randn(6, 4), torch.rand(6, 4) + 0.5, torch.randn(6, 4)
    for d in (LeanNormal(loc, scale), LogitBernoulli(logits), IndependentLogitBernoulli(logits)):
        assert d.expand(d.batch_shape) is d and d.expand(list(d.batch_shape)) is d
        wider = d.expand((3,) + tuple(d.batch_shape))
        assert type(wider) is type(d) and wider.batch_shape == (3,) + tuple(d.batch_shape)
        value = d.sample()
        assert torch.allclose(wider.log_prob(value), d.log_prob(value).expand(wider.batch_shape))
    with pyro.plate("data", 6, dim=-1):  # as in the model: the traced site keeps the very object
        q = LeanNormal(loc, scale).to_event(1)
        trace = pyro.poutine.trace(lambda: pyro.sample("z", q)).get_trace()
    assert trace.nodes["z"]["fn"].base_dist is q.base_dist


def test_samples_are_written_in_chunks_to_an_array_that_fits_the_disk(tmp_path, monkeypatch):
    import collections

    import numpy as np

    from pyro_vae.runs import samples
    from pyro_vae.errors import ConfigError
    from pyro_vae.config.build import vae_from_config
    from tests.conftest import tiny_config

    vae = vae_from_config(tiny_config().model, (5,))
    decoded = []
    original = vae.sample_means
    monkeypatch.setattr(vae, "sample_means", lambda n: decoded.append(n) or original(n))
    torch.manual_seed(0)
    out = samples.write_sample_means(vae, tmp_path / "s.npy", 10, chunk=4)
    assert decoded == [4, 4, 2]  # never more than one chunk decoded at once
    array = np.load(out)
    assert array.shape == (10, 5) and array.dtype == np.float32 and np.isfinite(array).all()
    assert len({row.tobytes() for row in array}) == 10  # every row its own draw
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]  # no temporary file left
    # a file larger than the disk's free space is refused before anything is written
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(samples.shutil, "disk_usage", lambda _p: Usage(10**6, 10**6 - 100, 100))
    with pytest.raises(ConfigError, match=r"10 samples of 5 values need 200 bytes on disk and .* has 100 bytes free; ask for fewer"):
        samples.write_sample_means(vae, tmp_path / "t.npy", 10)
    assert not (tmp_path / "t.npy").exists()
    # a disk that fills up while writing: an error naming the file, the old file kept, no temporary left
    monkeypatch.undo()

    def full_disk(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full_disk)
    with pytest.raises(ConfigError, match=r"cannot write .*s.npy \(No space left on device\); free space"):
        samples.write_sample_means(vae, out, 10, chunk=4)
    assert np.array_equal(np.load(out), array) and sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]
