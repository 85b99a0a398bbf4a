"""Densities of the priors, likelihoods and distributions against torch's and the closed forms."""

import pyro
import pyro.distributions as dist
import pytest
import torch


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
    from pyro_vae.components.likelihoods import (
        IndependentLogitBernoulli,
        LogitBernoulli,
    )

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
