"""Estimators against exact log p(x) of a linear-Gaussian model, and the batched HMC kernel."""

import math
from pathlib import Path

import pytest
import torch

from pyro_vae import estimators as E
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.mcmc.hmc import RHAT_THRESHOLD, BatchedHMC
from pyro_vae.traces import log_importance_weights


@pytest.fixture
def problem():
    torch.manual_seed(0)
    truth = LinearGaussian.random(5, 2, 0.5, seed=0)
    x, _ = truth.sample(40, seed=1)
    vae = E.exact_vae(truth).double()
    return truth, x, vae


def _perturb(vae):
    with torch.no_grad():
        vae.encoder[0].bias[:2] += 0.5
        vae.encoder[0].bias[2:4] += 0.3
    return vae


def test_exact_guide_makes_iwae_1_exact(problem):
    truth, x, vae = problem
    exact = truth.log_marginal(x)
    assert torch.allclose(E.iwae(vae, x, k=1).per_datapoint, exact, atol=1e-5)
    assert torch.allclose(E.exact_log_px(vae, x), exact, atol=1e-10)


def test_chunking_does_not_change_the_estimator(problem):
    truth, x, vae = problem
    # With the exact posterior as guide every weight is p(x): any chunking gives the same number.
    a = E.iwae(vae, x, k=50, chunks=(50, 40)).per_datapoint
    chunked = E.iwae(vae, x, k=50, chunks=(7, 3))
    b = chunked.per_datapoint
    assert torch.allclose(a, b, atol=1e-9)
    # every point's results land in its own place, and equal weights give ESS = k everywhere
    assert torch.allclose(b, truth.log_marginal(x), atol=1e-5)
    assert chunked.diagnostics["ess_min"] == pytest.approx(50, rel=1e-6)
    # the ELBO in chunks of one draw and one point (a 1 KiB cap) is exact too
    tiny_chunks = E.elbo(vae, x, num_samples=3, memory_gb=2**-20)
    assert torch.allclose(tiny_chunks.per_datapoint, truth.log_marginal(x), atol=1e-5)
    # With an inexact guide, chunked and unchunked runs agree within Monte Carlo error.
    _perturb(vae)
    torch.manual_seed(1)
    a = E.iwae(vae, x, k=1000, chunks=(1000, 40))
    torch.manual_seed(2)
    b = E.iwae(vae, x, k=1000, chunks=(250, 10))
    assert abs(a.mean - b.mean) < 0.05
    assert a.settings["chunk_particles"] == 1000 and b.settings["chunk_datapoints"] == 10


def test_bound_ordering_and_monotone_in_k(problem):
    truth, x, vae = problem
    _perturb(vae)
    exact = truth.log_marginal(x).mean().item()
    elbo = E.elbo(vae, x, num_samples=500)
    one = E.iwae(vae, x, k=1)
    values = [E.iwae(vae, x, k=k).mean for k in (10, 100, 2000)]
    assert elbo.mean < values[0] < values[1] < values[2] <= exact + 0.02
    # IWAE-1 is the ELBO with one draw: equal within its Monte Carlo standard error.
    diff = one.per_datapoint - elbo.per_datapoint
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))
    est = E.iwae(vae, x, k=100)
    assert 1 <= est.diagnostics["ess_min"] <= 100 and est.stderr > 0


def test_memory_plan_respects_the_cap(problem):
    _, x, vae = problem
    from pyro_vae.estimators.memory import bytes_per_particle, live_bytes_peak

    per_pair = bytes_per_particle(vae, x)
    for gb in (1e-6, 1e-4, 2.0):
        kc, nc = E.plan_chunks(5000, 10000, per_pair, gb)
        assert kc * nc * per_pair <= max(gb * 2**30, per_pair)
    assert E.plan_chunks(5000, 10000, 100_000, 2.0) == (5000, 4)
    est = E.iwae(vae, x, k=300, memory_gb=1e-4)
    kc, nc = est.settings["chunk_particles"], est.settings["chunk_datapoints"]
    assert kc * nc * per_pair <= 1e-4 * 2**30
    # the measured cost is what a chunk really holds, up to what a chunk pays once
    one_chunk = live_bytes_peak(lambda: log_importance_weights(vae.model, vae.guide, x[:nc], num_particles=kc))
    once = live_bytes_peak(lambda: log_importance_weights(vae.model, vae.guide, x[:1], num_particles=1))
    assert abs(one_chunk - once - (kc * nc - 1) * per_pair) <= 0.1 * kc * nc * per_pair


def test_the_memory_measure_counts_what_is_live_at_once_views_and_in_place_results_once():
    from pyro_vae.estimators.memory import live_bytes_peak

    outside = torch.ones(5000)  # made before: neither it nor views of it count

    def work():
        outside[:100].t(), outside.add_(1)  # a view of it and an in-place result on it
        a = torch.ones(1000)  # 4000 bytes
        b = a[:10]  # a view: no new memory
        a.mul_(2)  # in place: none either
        c = torch.ones(500)  # 2000 more: 6000 held
        del a, c  # b still holds a's 4000 bytes
        d = torch.ones(600)  # 2400 more: 6400 held
        return b.sum() + d.sum()  # two 4-byte sums and their 4-byte total: 6412

    assert live_bytes_peak(work) == 6412

    x = torch.ones(1000, requires_grad=True)

    def forward_and_backward():
        a = x.exp()  # 4000 bytes, saved by autograd for the backward pass
        total = a.sum()
        del a  # dropped here, but held until backward: 4004
        c = torch.ones(1000)  # 8004
        (grad,) = torch.autograd.grad(total, x)  # the gradient, 4000 more: 12004
        return grad, c

    assert live_bytes_peak(forward_and_backward) >= 12004


def test_the_memory_plan_counts_what_the_prior_takes_per_particle():
    """A VampPrior scores each particle against its K pseudo-inputs' Gaussians: a (particles, points,
    K, z_dim) tensor that the plan must count, or a chunk sized for the decoder alone overruns the
    cap (and, on CPU, page-faults: IWAE-5000 ran 4x slower). The paper's model: at least the hidden
    layer and the logits, live together, with the layers fused as the estimators run them."""
    from pyro_vae import config as C
    from pyro_vae.config.build import vae_from_config
    from pyro_vae.estimators.memory import bytes_per_particle

    x = torch.bernoulli(torch.full((3, 784), 0.2))
    paper = vae_from_config(C.load("aevb_mnist").model, (1, 28, 28))
    vamp = vae_from_config(C.load("aevb_mnist", ["model.prior.name=vamp", "model.prior.components=300"]).model, (1, 28, 28))
    state = torch.random.get_rng_state()
    paper_bytes, vamp_bytes = bytes_per_particle(paper, x), bytes_per_particle(vamp, x)
    assert torch.equal(torch.random.get_rng_state(), state)  # measuring draws nothing from the estimate's stream
    assert 4 * (500 + 784) <= paper_bytes <= 4 * (500 + 8 * 784)
    assert vamp_bytes >= paper_bytes + 4 * 300 * 20  # the prior's (K, z_dim) block per particle
    assert E.plan_chunks(5000, 10000, vamp_bytes, 2.0, 128 * 2**20)[1] == 1  # fewer per chunk than the paper model's


def test_minibatch_scaling_does_not_leak_into_weights(problem):
    _, x, vae = problem
    torch.manual_seed(3)
    plain = log_importance_weights(vae.model, vae.guide, x, num_particles=4)
    torch.manual_seed(3)
    scaled = log_importance_weights(vae.model, vae.guide, x, torch.arange(40), num_data=50000, num_particles=4)
    assert torch.allclose(plain, scaled)


def test_ais_close_to_exact(problem):
    truth, x, vae = problem
    _perturb(vae)
    torch.manual_seed(0)
    # 40 points x 32 chains: chains and points are cheap, steps cost (seeds 0-2 gave +0.019..-0.011).
    est = E.ais(vae, x, num_steps=500, num_chains=32, num_leapfrog=5)
    assert abs(est.mean - truth.log_marginal(x).mean().item()) < 0.05
    assert 0.4 < est.diagnostics["accept_mean"] < 0.95
    assert est.settings["num_steps"] == 500 and est.settings["schedule"] == "sigmoid"
    x = x[:10]
    enc = E.ais(vae, x, num_steps=100, num_chains=4, num_leapfrog=2, start="encoder", schedule="linear")
    assert abs(enc.mean - truth.log_marginal(x).mean().item()) < 0.1


def _chunked_and_alone(estimate, x, bytes_per_point, chunk):
    """``estimate(x, memory_gb=...)`` with room for ``chunk`` datapoints a chunk, and ``estimate`` on
    each chunk's points alone, from the same seed; checks the plan and that the two agree to the bit."""
    torch.manual_seed(0)
    chunked = estimate(x, memory_gb=(chunk + 0.5) * bytes_per_point / 2**30)
    torch.manual_seed(0)
    alone = [estimate(x[lo : lo + chunk]) for lo in range(0, x.shape[0], chunk)]
    assert chunked.settings["chunk_datapoints"] == chunk and alone[0].settings["chunk_datapoints"] == min(chunk, x.shape[0])
    assert torch.equal(chunked.per_datapoint, torch.cat([a.per_datapoint for a in alone]))
    return chunked, alone


def test_ais_runs_its_datapoints_in_chunks_under_the_memory_cap(problem):
    """Chains of different datapoints never interact, so AIS runs its datapoints in chunks sized to
    ``memory_gb``: each chunk is exactly AIS run on its points alone, one after the other (the same
    draws in the same order), and a step-size schedule handed in (BDMC's) is split with them."""
    from pyro_vae.estimators.memory import bytes_per_chain

    _, x, vae = problem
    x = x[:6]
    options = dict(num_steps=20, num_chains=4, num_leapfrog=2)
    per_point = 4 * bytes_per_chain(vae, x)  # 4 chains a datapoint
    chunked, alone = _chunked_and_alone(lambda xs, **kw: E.ais(vae, xs, **options, **kw), x, per_point, 2)
    assert chunked.diagnostics["accept_mean"] == pytest.approx(sum(a.diagnostics["accept_mean"] for a in alone) / 3)
    assert chunked.diagnostics["accept_min_chain"] == min(a.diagnostics["accept_min_chain"] for a in alone)
    assert E.ais(vae, x, **options).settings["chunk_datapoints"] == 6  # the default cap holds them all
    steps = torch.full((20, 6), 0.3, dtype=x.dtype)
    steps[:, 3:] = 0.1  # a schedule per datapoint, as BDMC's pilot hands it in
    fixed = E.ais(vae, x, step_schedule=steps, memory_gb=4.5 * per_point / 2**30, **options)
    assert fixed.settings["chunk_datapoints"] == 4 and abs(fixed.diagnostics["step_size_mean"] - 0.2) < 1e-6


def test_local_gaussians_are_fitted_in_chunks_of_datapoints_under_the_memory_cap(problem):
    """Each datapoint's q* is fitted on its own, so the gap report's q* runs in chunks sized to
    ``memory_gb``: each chunk is exactly the fit of its points alone, one after the other."""
    from pyro_vae.estimators.gaps import FINAL_SAMPLES
    from pyro_vae.estimators.memory import bytes_per_chain, bytes_per_particle

    _, x, vae = problem
    x = x[:6]
    per_point = max(8 * bytes_per_chain(vae, x), FINAL_SAMPLES * bytes_per_particle(vae, x))
    _chunked_and_alone(lambda xs, **kw: E.optimise_local_gaussians(vae, xs, steps=3, **kw), x, per_point, 3)
    with pytest.raises(ValueError, match="memory_gb"):
        E.optimise_local_gaussians(vae, x, steps=1, memory_gb=float("inf"))


def test_the_appendix_d_estimator_runs_in_chunks_of_datapoints_under_the_memory_cap(problem):
    """Each datapoint's chains, Gaussian fit and estimate are its own: in chunks sized to
    ``memory_gb``, each chunk is exactly the estimator on its points alone, one after the other,
    and the chains' diagnostics cover all of them."""
    from pyro_vae.estimators.memory import bytes_per_chain, bytes_per_particle

    _, x, vae = problem
    x = x[:6]
    options = dict(num_samples=5, num_warmup=5, num_chains=2)
    per_point = max(2 * bytes_per_chain(vae, x), 10 * bytes_per_particle(vae, x))
    chunked, alone = _chunked_and_alone(lambda xs, **kw: E.hmc_marginal_likelihood(vae, xs, **options, **kw), x, per_point, 2)
    assert chunked.diagnostics["accept_mean"] == pytest.approx(sum(a.diagnostics["accept_mean"] for a in alone) / 3)
    assert chunked.diagnostics["ess_bulk_min"] == pytest.approx(min(a.diagnostics["ess_bulk_min"] for a in alone))
    assert chunked.diagnostics["rhat_max"] == pytest.approx(max(a.diagnostics["rhat_max"] for a in alone))


def test_bdmc_runs_its_points_in_chunks_under_the_memory_cap(problem):
    """BDMC's pilot, forward and reverse chains run in chunks of points under ``memory_gb``: the
    same estimator (the chunks' draws come in another order, so the numbers are compared with the
    exact log p(x) they bracket, not with an unchunked run)."""
    from pyro_vae.estimators.memory import bytes_per_chain

    truth, _, vae = problem
    x, z = vae.simulate(8)
    per_point = 4 * bytes_per_chain(vae, x)
    torch.manual_seed(0)
    out = E.bdmc(vae, num_steps=100, num_chains=4, num_leapfrog=3, x=x, z=z, memory_gb=3.5 * per_point / 2**30)
    assert out["lower"].settings["chunk_datapoints"] == 3
    exact = truth.log_marginal(x)
    assert out["lower"].per_datapoint.shape == out["upper"].per_datapoint.shape == (8,)
    assert out["lower"].mean <= exact.mean().item() + 0.1 and out["upper"].mean >= exact.mean().item() - 0.1
    # each point's reverse chains start from its own posterior sample (single runs scatter by about 1 nat)
    assert (out["upper"].per_datapoint - exact).abs().max() < 2.5 and 0 < out["upper"].diagnostics["accept_mean"] < 1


def test_bdmc_brackets_exact(problem):
    truth, _, vae = problem
    torch.manual_seed(0)
    out = E.bdmc(vae, num_points=10, num_steps=200, num_chains=4, num_leapfrog=3)
    exact = truth.log_marginal(out["x"]).mean().item()
    assert out["lower"].mean <= exact + 0.03
    assert out["upper"].mean >= exact - 0.03
    assert 0 <= out["gap_mean"] < 0.5
    gap = out["upper"].per_datapoint - out["lower"].per_datapoint
    assert abs(out["gap_stderr"] - (gap.std() / 10**0.5).item()) < 1e-9 and out["gap_max"] == gap.max().item()


def test_appendix_d_estimator_close_to_exact(problem):
    truth, x, vae = problem
    _perturb(vae)
    x = x[:20]
    est = E.hmc_marginal_likelihood(vae, x, num_samples=60, num_warmup=80)
    assert abs(est.mean - truth.log_marginal(x).mean().item()) < 0.1
    assert "rhat_max" in est.diagnostics and est.diagnostics["accept_mean"] > 0.6


def test_hmc_kernel_leaves_gaussian_invariant_with_per_chain_steps():
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]])
    prec = torch.linalg.inv(cov)
    scales = torch.linspace(0.1, 3.0, 300)  # chains of very different widths need different steps

    def potential(z):
        zs = z / scales.unsqueeze(-1)
        return 0.5 * ((zs @ prec) * zs).sum(-1)

    kernel = BatchedHMC(potential, step_size=0.5, num_leapfrog=5, target_accept=0.8)
    z0 = 2 * torch.randn(300, 2) * scales.unsqueeze(-1)  # overdispersed start
    draws, stats = kernel.run(z0, num_warmup=200, num_samples=300)
    zs = (draws / scales.view(1, -1, 1)).reshape(-1, 2)
    assert torch.allclose(zs.mean(0), torch.zeros(2), atol=0.06)
    assert torch.allclose(torch.cov(zs.T), cov, rtol=0.1, atol=0.05)
    assert abs(stats.accept_prob.mean().item() - 0.8) < 0.12
    # Step sizes follow each chain's scale (which spans 30x): log step ~ log scale.
    corr = torch.corrcoef(torch.stack([stats.step_size.log(), scales.log()]))[0, 1]
    assert corr > 0.85


def test_arviz_export_and_diagnostics():
    draws = torch.randn(50, 3, 4, 2)  # (samples, chains, datapoints, D)
    idata = E.to_inference_data(draws)
    assert idata.posterior["z"].shape == (3, 50, 4, 2)
    diag = E.chain_diagnostics(draws)
    assert diag["ess_bulk_mean"] > 50 and diag["rhat_max"] < 1.1 and diag["datapoints_rhat_above"] == 0


def test_chain_diagnostics_count_the_datapoints_whose_chains_disagree():
    """A datapoint whose chains sit in different places (two modes, or not mixed), or whose chain
    never moved (R-hat infinite or undefined), counts once, whatever its number of dimensions."""
    import warnings

    torch.manual_seed(0)
    draws = torch.randn(200, 2, 5, 3)  # (samples, chains, datapoints, D)
    draws[:, 1, 0] += 4.0  # every dimension of datapoint 0
    draws[:, 1, 1, 2] += 4.0  # one dimension of datapoint 1
    draws[:, 0, 3] = 0.7  # datapoint 3: one chain stuck at its start
    draws[:, :, 4] = 0.0  # datapoint 4: neither chain moved
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide-by-zero inside ArviZ stays out of reports
        diag = E.chain_diagnostics(draws)
    assert diag["datapoints_rhat_above"] == 4 and diag["rhat_threshold"] == RHAT_THRESHOLD == 1.1
    assert diag["rhat_max"] == math.inf  # undefined where no chain moved: the worst case
    one_chain = E.chain_diagnostics(draws[:, :1])
    assert "datapoints_rhat_above" not in one_chain and "rhat_max" not in one_chain  # R-hat needs two chains


def test_arviz_daily_notice_stays_out_of_reports(tmp_path):
    """ArviZ warns once a day on import (stamped in the user's cache); an evaluation's diagnostics
    must not print it. A fresh process and cache, so that the import really happens and warns."""
    import os
    import subprocess
    import sys

    code = ("import torch; from pyro_vae.mcmc.hmc import chain_diagnostics; "
            "chain_diagnostics(torch.randn(20, 2, 1, 1)); import arviz")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "PYTHONWARNINGS": "always"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ArviZ is undergoing" not in done.stderr
    import arviz

    if "daily_warning" in Path(arviz.__file__).read_text():  # ArviZ releases before 0.23 have no notice
        # the notice was due (this cache had no stamp) and was filtered, not missed
        assert (tmp_path / "arviz" / "daily_warning").exists()


def test_gap_report_decomposes(problem):
    truth, x, vae = problem
    _perturb(vae)
    rep = E.gap_report(vae, x[:10], k=500)
    s = rep["summary"]
    assert math.isclose(s["inference_gap"], s["approximation_gap"] + s["amortization_gap"], abs_tol=1e-6)
    # The full-covariance exact family: q* (diagonal) is no better than the amortized guide here,
    # but the amortization gap of the perturbed diagonal-free guide is finite and the gap positive.
    assert s["inference_gap"] > 0


def test_hmc_reuses_the_potential_of_its_last_state():
    calls = []

    def potential(z):
        calls.append(1)
        return 0.5 * (z * z).sum(-1)

    kernel = BatchedHMC(potential, step_size=0.3, num_leapfrog=4)
    z = torch.randn(10, 2)
    for _ in range(5):
        z, _ = kernel.step(z)
    assert len(calls) == 1 + 5 * 4  # one start-up evaluation, then only the leapfrog steps
    tempered = BatchedHMC(potential, step_size=0.3, num_leapfrog=4, fixed_potential=False)
    calls.clear()
    z = torch.randn(10, 2)
    for _ in range(5):
        z, _ = tempered.step(z)
    assert len(calls) == 5 * 5  # a potential that may change is evaluated afresh every step


def test_estimators_leave_pyros_param_store_alone():
    """Estimators use the modules' parameters directly: no pyro.module registration per call (its
    cost is a third of a small HMC potential evaluation), and the VAE's setting is restored."""
    import pyro

    from pyro_vae.config.build import vae_from_config
    from tests.conftest import tiny_config

    vae = vae_from_config(tiny_config().model, (6,))
    assert vae.register_params
    x = torch.randn(4, 6)
    pyro.clear_param_store()
    E.iwae(vae, x, k=3)
    E.elbo(vae, x)
    E.hmc_marginal_likelihood(vae, x, num_samples=4, num_warmup=2, num_leapfrog=2)
    assert len(pyro.get_param_store()) == 0 and vae.register_params
    vae.model(x)  # outside an estimator, the model registers as Pyro users expect
    assert len(pyro.get_param_store()) > 0


def test_hmc_potential_gradients_treat_network_parameters_as_constants():
    """dU/dz is all HMC needs: the potential runs inside ``input_gradients_only`` (so the fused
    layers skip weight gradients), and the setting is restored afterwards."""
    from pyro_vae.mcmc.hmc import potential_and_grad
    from pyro_vae.speed import fused_linear

    seen = []

    def potential(z):
        seen.append(fused_linear._INPUT_GRADIENTS_ONLY.active)
        return 0.5 * (z**2).sum(-1)

    z = torch.randn(4, 3)
    u, grad = potential_and_grad(potential, z)
    assert seen == [True] and not fused_linear._INPUT_GRADIENTS_ONLY.active
    assert torch.allclose(grad, z) and torch.allclose(u, 0.5 * (z**2).sum(-1))


def test_estimators_reject_counts_and_memory_caps_below_one(problem):
    """A zero or negative count (particles, chains, samples, points), step size or memory cap is an
    error that names the argument, not a ZeroDivisionError from deep inside or a silent
    one-pair-per-chunk crawl."""
    _, x, vae = problem
    x = x[:2]
    bad = [
        (lambda: E.iwae(vae, x, k=0), "k must be a whole number >= 1, got 0"),
        (lambda: E.iwae(vae, x, k=10, memory_gb=0.0), "memory_gb"),
        (lambda: E.iwae(vae, x, k=10, memory_gb=float("nan")), "memory_gb"),
        (lambda: E.elbo(vae, x, num_samples=0), "num_samples must be a whole number >= 1, got 0"),
        (lambda: E.elbo(vae, x, memory_gb=-1.0), "memory_gb"),
        (lambda: E.ais(vae, x, num_steps=0), "num_steps must be a whole number >= 1, got 0"),
        (lambda: E.ais(vae, x, num_steps=3, num_chains=0), "num_chains"),
        (lambda: E.ais(vae, x, num_steps=3, pilot_chains=0), "pilot_chains"),
        (lambda: E.ais(vae, x, num_steps=3, memory_gb=0.0), "memory_gb"),
        (lambda: E.hmc_marginal_likelihood(vae, x, num_samples=0), "num_samples"),
        (lambda: E.hmc_marginal_likelihood(vae, x, num_chains=0), "num_chains"),
        (lambda: E.hmc_marginal_likelihood(vae, x, memory_gb=-2.0), "memory_gb"),
        (lambda: BatchedHMC(lambda z: (z**2).sum(-1) / 2).run(torch.zeros(2, 3), 0, 5, thin=0), "thin must be a whole number >= 1, got 0"),
        (lambda: E.ais(vae, x, num_steps=3, step_size=-0.1), "step size must be a finite number > 0, got -0.1"),
        (lambda: E.hmc_marginal_likelihood(vae, x, step_size=0.0), "step size must be a finite number > 0, got 0.0"),
        (lambda: E.bdmc(vae, num_points=0), "num_points .* must be a whole number >= 1, got 0"),
        (lambda: E.optimise_local_gaussians(vae, x, num_samples=0), "num_samples must be a whole number >= 1, got 0"),
        (lambda: E.optimise_local_gaussians(vae, x, lr=-1.0), "a finite lr > 0"),
        # a step size so large that the fit leaves the reals: named, not returned as NaN
        (lambda: E.optimise_local_gaussians(vae, x, steps=20, lr=1e6), r"diverged at \d+ of \d+ datapoints .* at lr = 1000000.0"),
        (lambda: E.gap_report(vae, x, k=0), "k must be a whole number >= 1, got 0"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            call()


def test_estimators_name_a_real_setting_of_the_wrong_type_or_range_before_any_work(problem):
    _, x, vae = problem
    x = x[:6]
    bad = [
        (lambda: E.ais(vae, x, num_steps=3, step_size="0.1"), ValueError, r"step size must be a finite number > 0, got '0.1'"),
        (lambda: E.ais(vae, x, num_steps=3, target_accept="0.5"), ValueError, r"target_accept must lie in \(0, 1\), got '0.5'"),
        # a negative jitter made the fitted covariance indefinite: torch's Cholesky error
        (lambda: E.hmc_marginal_likelihood(vae, x, jitter=-1.0), ValueError, r"jitter .* must be a finite number >= 0, got -1.0"),
        # a negative threshold counted every unit as active
        (lambda: E.active_units(vae, x, threshold=-1), ValueError, r"threshold .* must be a finite number >= 0, got -1"),
        # an AIS setting gap_report does not pass on failed only after its ELBO, IWAE and local fits
        (lambda: E.gap_report(vae, x, k=10, ais_steps=3, num_chain=2), TypeError,
         r"gap_report got unknown setting\(s\) num_chain; its AIS settings are ais_steps .* and those of ais\(\): num_chains, "),
    ]
    for call, error, message in bad:
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize("estimate", [
    lambda vae, x: E.iwae(vae, x, k=3),
    lambda vae, x: E.elbo(vae, x),
    lambda vae, x: E.ais(vae, x, num_steps=2),
    lambda vae, x: E.hmc_marginal_likelihood(vae, x, num_samples=2, num_warmup=2),
    lambda vae, x: E.optimise_local_gaussians(vae, x, steps=1),
], ids=["iwae", "elbo", "ais", "appendix_d", "local_gaussians"])
def test_estimators_name_a_wrong_data_shape_dtype_device_or_a_nan(problem, estimate):
    _, x, vae = problem  # x: (40, 5) float64, the model in float64 on the CPU
    with pytest.raises(ValueError, match=r"x must have shape \(n, 5\) with n >= 1.*got \(3, 7\)"):
        estimate(vae, torch.rand(3, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"got \(5,\)"):
        estimate(vae, x[0])
    with pytest.raises(ValueError, match=r"got \(0, 5\)"):
        estimate(vae, x[:0])
    with pytest.raises(ValueError, match="floating point"):
        estimate(vae, x[:2].long())
    with pytest.raises(ValueError, match=r"got a numpy.ndarray; torch.as_tensor\(x, dtype=torch.float32\) makes one"):
        estimate(vae, x[:2].numpy())
    with pytest.raises(ValueError, match="x is on meta but the model on cpu"):
        estimate(vae, x[:2].to("meta"))
    with pytest.raises(ValueError, match=r"x is torch.float32 but the model's parameters are torch.float64"):
        estimate(vae, x[:2].float())
    broken = x[:4].clone()
    broken[[1, 3], 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values in 2 of its 4 rows \(the first: row 1\)"):
        estimate(vae, broken)


def _collapse_unit_0(vae):
    """Make q(z_0 | x) = N(0, 1) for every x: an inactive unit, its guide at the prior. The exact
    guide is ``full_normal``: outputs mu (2), the raw diagonal of L (2, softplus + 1e-5), L[1, 0]."""
    with torch.no_grad():
        layer = vae.encoder[0]
        layer.weight[[0, 2]] = 0.0
        layer.bias[0] = 0.0
        layer.bias[2] = math.log(math.expm1(1 - 1e-5))  # L[0, 0] = 1
    return vae


def test_active_units_read_the_guides_mean_and_find_a_collapsed_unit(problem):
    truth, _, vae = problem
    x, _ = truth.sample(2000, seed=4)
    units = E.active_units(vae, x)
    expected = vae.encode(x).mean.var(0)
    assert units["posterior_mean"] == "closed form" and units["n"] == 2000 and units["threshold"] == 0.01
    assert torch.allclose(torch.tensor(units["activity"], dtype=torch.float64), expected, atol=1e-6)
    assert units["active_units"] == int((expected > 0.01).sum()) == 2 and units["num_latents"] == 2
    units = E.active_units(_collapse_unit_0(vae), x)
    assert units["activity"][0] == 0.0 and units["active_units"] == 1
    assert torch.allclose(vae.encode(x[:3]).variance[:, 0], torch.ones(3, dtype=torch.float64))


def test_active_units_without_a_closed_form_mean_subtract_the_monte_carlo_noise(problem, monkeypatch):
    truth, _, vae = problem
    x, _ = truth.sample(2000, seed=4)
    exact = torch.tensor(E.active_units(vae, x)["activity"], dtype=torch.float64)

    def no_mean(self):
        raise NotImplementedError  # as a flow's distribution does

    monkeypatch.setattr(type(vae.encode(x[:1])), "mean", property(no_mean))
    torch.manual_seed(0)
    units = E.active_units(vae, x, num_samples=100)
    assert units["posterior_mean"].startswith("mean of 100 draws")
    assert torch.allclose(torch.tensor(units["activity"], dtype=torch.float64), exact, atol=5e-3)
    # a unit whose q is the prior: the draws' noise alone is Var/S = 0.01, the threshold; subtracted, it is ~0
    torch.manual_seed(0)
    units = E.active_units(_collapse_unit_0(vae), x, num_samples=100)
    assert abs(units["activity"][0]) < 1e-3 and units["active_units"] == 1
    with pytest.raises(ValueError, match="at least 2 datapoints"):
        E.active_units(vae, x[:1])
