"""The VAE as a Pyro model: the ELBO of a linear-Gaussian model in closed form, N/M scaling, Pyro's SVI, the JIT objectives."""

import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.estimators import exact_vae
from pyro_vae.traces import log_importance_weights


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
    from pyro_vae.config.build import vae_from_config
    from tests.conftest import tiny_config

    cfg = tiny_config()
    vae = vae_from_config(cfg.model, (6,))
    x = torch.randn(10, 6)
    torch.manual_seed(1)
    mf = TraceMeanField_ELBO(num_particles=20000, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    torch.manual_seed(1)
    mc = Trace_ELBO(num_particles=20000, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    assert abs(mf.item() - mc.item()) / abs(mc.item()) < 0.01


def test_subsample_scaling_is_n_over_m():
    from pyro_vae.components.registry import OBJECTIVES as REG
    from pyro_vae.config.build import vae_from_config
    from pyro_vae.objectives import OBJECTIVES  # noqa: F401
    from tests.conftest import tiny_config

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
    from pyro.infer import SVI

    from pyro_vae.config.build import vae_from_config
    from tests.conftest import tiny_config

    vae = vae_from_config(tiny_config().model, (6,))
    before = {k: v.detach().clone() for k, v in vae.named_parameters()}
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.01}), TraceMeanField_ELBO())
    x = torch.randn(10, 6)
    for _ in range(2):
        svi.step(x)
    changed = {k for k, v in vae.named_parameters() if not torch.equal(v, before[k])}
    assert changed == set(before)


def test_jit_objectives_compile_once():
    from pyro_vae.components.registry import OBJECTIVES as REG
    from pyro_vae.config.build import vae_from_config
    from tests.conftest import tiny_config

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


def test_jit_objective_scales_a_short_last_batch_like_the_uncompiled_one():
    """The compiled graph is traced on one batch size; a short last batch must still be scaled by
    N/M with its own M (the plate's subsample size must not be frozen into the graph)."""
    from pyro_vae.components.registry import OBJECTIVES as REG
    from pyro_vae.config.build import vae_from_config
    from tests.conftest import tiny_config

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


def test_sample_means_draws_n_from_the_prior_and_names_a_negative_n():
    vae = exact_vae(LinearGaussian.random(5, 2, 0.5, seed=0))
    assert vae.sample_means(3).shape == (3, 5) and vae.sample_means(0).shape == (0, 5)
    with pytest.raises(ValueError, match=r"n \(the number of draws\) must be a whole number >= 0, got -1"):
        vae.sample_means(-1)
    with pytest.raises(ValueError, match="got 2.5"):
        vae.sample_means(2.5)
