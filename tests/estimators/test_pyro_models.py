"""The estimators on Pyro models written by hand, not built by the registry: several latent sites,
two stochastic layers, and a model in the style of Pyro's own VAE example."""

import ast
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae import estimators as E
from pyro_vae.programs import PyroModel

X_DIM = 4


def _simulate(model, n):
    """n datapoints x drawn from a model whose observed site is "x"."""
    with torch.no_grad():
        trace = pyro.poutine.trace(pyro.poutine.uncondition(model)).get_trace(torch.zeros(n, X_DIM))
    return trace.nodes["x"]["value"]


class TwoSiteLinearGaussian:
    """x = W1 z1 + W2 z2 + b + noise, z1 in R^1 and z2 in R^2 independent standard normal: a
    linear-Gaussian model with two latent sites, whose log p(x) is N(x; b, W W^T + s^2 I)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.W1, self.W2 = torch.randn(X_DIM, 1, generator=g), torch.randn(X_DIM, 2, generator=g)
        self.b, self.s = torch.randn(X_DIM, generator=g), 0.6

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            loc = z1 @ self.W1.T + z2 @ self.W2.T + self.b
            pyro.sample("x", dist.Normal(loc, self.s).to_event(1), obs=x)

    def guide(self, x):  # a broad proposal that does not read x: the estimators must do the work
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", dist.Normal(torch.zeros(1), 1.5).to_event(1))
            pyro.sample("z2", dist.Normal(torch.zeros(2), 1.5).to_event(1))

    def log_px(self, x):
        W = torch.cat([self.W1, self.W2], 1)
        cov = W @ W.T + self.s**2 * torch.eye(X_DIM)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def sample(self, n):
        return _simulate(self.model, n)


def estimates_beside_the_exact_log_px(truth, seed: int, num_warmup: int, device: str = "cpu"):
    """The mean exact log p(x) of 6 points simulated from ``truth``, and IWAE, AIS, App. D and BDMC
    on them (moved to ``device``), through ``truth.model`` and ``truth.guide``."""
    torch.manual_seed(seed)
    x_cpu = truth.sample(6)
    x = x_cpu.to(device)
    exact = truth.log_px(x_cpu).mean().item()
    iw = E.iwae(truth.model, truth.guide, x, k=4000)
    ais = E.ais(truth.model, truth.guide, x, num_steps=300, num_chains=8, num_leapfrog=5)
    hmc = E.hmc_marginal_likelihood(truth.model, truth.guide, x, num_samples=200, num_warmup=num_warmup, num_chains=4)
    report = E.bdmc(truth.model, truth.guide, x=x, num_points=5, num_steps=200, num_chains=4, num_leapfrog=5)
    return exact, iw, ais, hmc, report


def test_every_estimator_on_a_model_with_two_latent_sites_matches_the_exact_log_px():
    exact, iw, ais, hmc, report = estimates_beside_the_exact_log_px(TwoSiteLinearGaussian(), seed=0, num_warmup=500)
    assert abs(iw.mean - exact) < 0.05 and abs(ais.mean - exact) < 0.05 and abs(hmc.mean - exact) < 0.1
    assert iw.per_datapoint.shape == (6,) and hmc.diagnostics["datapoints_rhat_above"] <= 2
    assert abs(report["gap_mean"]) < 0.2 and report["x"].shape == (5, X_DIM)


def test_the_latent_sites_are_flattened_in_the_order_the_model_samples_them():
    truth = TwoSiteLinearGaussian()
    target = PyroModel(truth.model, truth.guide)
    target.check_points(torch.zeros(3, X_DIM))
    assert target.sites == {"z1": torch.Size([1]), "z2": torch.Size([2])} and target.z_dim == 3
    z = torch.arange(2 * 3 * 3, dtype=torch.float).reshape(2, 3, 3)
    assert torch.equal(target.flat(target.latents(z)), z) and torch.equal(target.latents(z)["z2"], z[..., 1:])


class TwoLayer:
    """z2 -> z1 -> x: z2 ~ N(0, I_2), z1 ~ N(tanh(A z2), 0.5^2 I_3), x ~ N(B z1, 0.4^2 I)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(5)
        self.A, self.B = torch.randn(3, 2, generator=g), torch.randn(X_DIM, 3, generator=g)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(torch.tanh(z2 @ self.A.T), 0.5).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.B.T, 0.4).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z2", dist.Normal(torch.zeros(2), 1.2).to_event(1))
            pyro.sample("z1", dist.Normal(torch.zeros(3), 1.5).to_event(1))


def test_ais_agrees_with_iwae_of_many_particles_on_two_stochastic_layers():
    m = TwoLayer()
    torch.manual_seed(1)
    x = _simulate(m.model, 5)
    iw = E.iwae(m.model, m.guide, x, k=20000)
    ais = E.ais(m.model, m.guide, x, num_steps=400, num_chains=8, num_leapfrog=5)
    assert abs(ais.mean - iw.mean) < 0.1
    assert E.elbo(m.model, m.guide, x, num_samples=50).mean < iw.mean  # the ELBO is looser


class PyroExampleVAE(nn.Module):
    """In the style of Pyro's examples/vae/vae.py: nn.Modules registered with pyro.module, a
    Bernoulli decoder, and the data plate around the latent and observed sites."""

    def __init__(self, x_dim: int = 12, z_dim: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim))
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))


def test_a_vae_as_in_pyros_own_example_is_estimated_and_trains_under_svi():
    torch.manual_seed(2)
    vae = PyroExampleVAE()
    x = (torch.rand(40, 12) < 0.3).float()
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO())
    for _ in range(50):
        svi.step(x)
    elbo = E.elbo(vae.model, vae.guide, x, num_samples=20)
    iw = E.iwae(vae.model, vae.guide, x, k=300)
    ais = E.ais(vae.model, vae.guide, x[:4], num_steps=100, num_chains=4, num_leapfrog=3, start="encoder")
    assert elbo.mean < iw.mean < 0 and abs(ais.mean - E.iwae(vae.model, vae.guide, x[:4], k=300).mean) < 0.5
    assert math.isfinite(E.hmc_marginal_likelihood(vae.model, vae.guide, x[:2], num_samples=10, num_warmup=10).mean)


def test_a_model_the_estimators_cannot_read_is_named():
    def global_latent(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))  # shared by every datapoint
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)

    with pytest.raises(ValueError, match="'scale' is outside pyro.plate"):
        E.iwae(global_latent, global_latent, torch.zeros(3), k=5)
    with pytest.raises(TypeError, match="a trained VAE and x, or a Pyro model"):
        E.iwae(global_latent, torch.zeros(3), k=5)


def test_the_readme_example_on_a_users_own_model_runs(capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## Estimators on your own Pyro model.*?```python\n(.*?)```", readme, re.S).group(1)
    exec(code, {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("iwae: -") and out[1].startswith("ais: -") and abs(float(out[2])) < 1
    gaps = ast.literal_eval(out[3])  # the dict the example printed
    assert set(gaps) == {"inference_gap", "approximation_gap", "amortization_gap"} and gaps["inference_gap"] > 0


class GammaPrecision:
    """x_j | tau ~ N(0, 1/tau) for j = 1..D, tau ~ Gamma(a, b): a positive latent. Its log p(x) is
    a multivariate Student-t density, a log b + lgamma(a + D/2) - lgamma(a) - (D/2) log 2 pi
    - (a + D/2) log(b + |x|^2 / 2)."""

    a, b = 3.0, 2.0

    def model(self, x):  # parameters made on x's device and dtype
        with pyro.plate("data", x.shape[0]):
            tau = pyro.sample("tau", dist.Gamma(x.new_tensor(self.a), x.new_tensor(self.b)))
            pyro.sample("x", dist.Normal(x.new_zeros(()), tau.rsqrt().unsqueeze(-1)).expand(tau.shape + (X_DIM,)).to_event(1), obs=x)

    def guide(self, x):  # a broad proposal on the same support
        with pyro.plate("data", x.shape[0]):
            pyro.sample("tau", dist.LogNormal(x.new_zeros(()), x.new_ones(())))

    def sample(self, n):
        return _simulate(self.model, n)

    def log_px(self, x):
        a, b, d = self.a, self.b, X_DIM
        return (a * math.log(b) + math.lgamma(a + d / 2) - math.lgamma(a) - d / 2 * math.log(2 * math.pi)
                - (a + d / 2) * torch.log(b + 0.5 * (x**2).sum(-1)))


def test_a_positive_latent_is_sampled_in_unconstrained_coordinates_and_every_estimator_matches_the_exact_log_px():
    # with pyro's argument checks on (its default), as a user runs it: a diverging leapfrog step
    # that overflows exp(u) is rejected, not raised
    exact, iw, ais, hmc, report = estimates_beside_the_exact_log_px(GammaPrecision(), seed=4, num_warmup=300)
    # (without the Jacobian, AIS and App. D both come out about 0.09 nats low here)
    assert abs(iw.mean - exact) < 0.05 and abs(ais.mean - exact) < 0.04 and abs(hmc.mean - exact) < 0.04
    assert abs(report["gap_mean"]) < 0.2


class PoissonCounts:
    """Counts x_d ~ Poisson(exp(z + c_d)), d = 1..D, with z ~ N(0, 1): integer data (``torch.long``)
    beside float latents. log p(x) = log int N(z; 0, 1) prod_d Poisson(x_d; e^(z + c_d)) dz, by the
    trapezoid rule on a fine grid."""

    c = torch.tensor([0.5, -0.3, 1.0, 0.0])

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Poisson((z.unsqueeze(-1) + self.c).exp()).to_event(1), obs=x)

    def guide(self, x):  # a broad proposal that does not read x
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.3))

    def sample(self, n):
        return _simulate(self.model, n).long()

    def log_px(self, x):
        z = torch.linspace(-8, 8, 8001, dtype=torch.float64)
        log_joint = dist.Normal(0.0, 1.0).log_prob(z) + dist.Poisson((z[:, None, None] + self.c.double()).exp()).log_prob(x.double()).sum(-1).T
        return log_joint.exp().mul(z[1] - z[0]).sum(-1).log().float()  # (n,)


def test_integer_data_with_float_latents_are_estimated_as_the_same_counts_in_float():
    """Counts given as torch.long (as a Poisson or Categorical likelihood takes them): the latents
    take the model's float dtype, not x's, and the estimates match the exact log p(x)."""
    truth = PoissonCounts()
    torch.manual_seed(2)
    x = truth.sample(6)
    exact = truth.log_px(x).mean().item()
    iw = E.iwae(truth.model, truth.guide, x, k=2000)
    hmc = E.hmc_marginal_likelihood(truth.model, truth.guide, x, num_samples=60, num_warmup=60, num_chains=2)
    assert abs(iw.mean - exact) < 0.05 and abs(hmc.mean - exact) < 0.1
    # AIS (its accuracy is tested on the models above): the counts as long or as float, the same numbers
    as_long, as_float = [_seeded(E.ais, truth.model, truth.guide, counts, num_steps=20, num_chains=4) for counts in (x, x.float())]
    assert torch.equal(as_long.per_datapoint, as_float.per_datapoint)
    report = E.bdmc(truth.model, truth.guide, x=x, num_points=2, num_steps=20, num_chains=2)
    assert report["x"].dtype == torch.long and math.isfinite(report["gap_mean"])
    gaps = E.gap_report(truth.model, truth.guide, x, k=1000)
    assert 0 <= gaps["summary"]["approximation_gap"] < 0.05 and gaps["summary"]["amortization_gap"] > 0


def _seeded(estimator, *args, **kwargs):
    torch.manual_seed(0)
    return estimator(*args, **kwargs)


def test_the_chains_an_estimate_keeps_are_the_sites_own_values_one_variable_per_site():
    """As Pyro's MCMC gives them: tau > 0, whose posterior Gamma(a + D/2, b + |x|^2 / 2) the
    App. D chains' mean matches (a mean of the unconstrained log tau would not); z1 and z2 of the
    two-site model as two variables of their own shapes."""
    truth = GammaPrecision()
    torch.manual_seed(2)
    x = truth.sample(3)
    hmc = E.hmc_marginal_likelihood(truth.model, truth.guide, x, num_samples=200, num_warmup=200, num_chains=4)
    tau = torch.as_tensor(hmc.chains.posterior["tau"].values)  # (chain, draw, datapoint)
    assert tau.shape == (4, 200, 3) and bool((tau > 0).all())
    exact_mean = (truth.a + X_DIM / 2) / (truth.b + 0.5 * (x**2).sum(-1).double())
    assert torch.allclose(tau.mean((0, 1)), exact_mean, rtol=0.15)
    ais = E.ais(truth.model, truth.guide, x, num_steps=20, num_chains=4)
    assert ais.chains.posterior["tau"].shape == (4, 1, 3) and bool((ais.chains.posterior["tau"] > 0).all())
    two = TwoSiteLinearGaussian()
    hmc = E.hmc_marginal_likelihood(two.model, two.guide, two.sample(3), num_samples=20, num_warmup=20)
    assert {k: v.dims for k, v in hmc.chains.posterior.items()} == {
        "z1": ("chain", "draw", "datapoint", "z1_dim_0"), "z2": ("chain", "draw", "datapoint", "z2_dim_0")}


def test_constrained_sites_map_to_flat_unconstrained_coordinates_and_back():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3)))  # the simplex: 2 free coordinates
            share = pyro.sample("share", dist.Beta(2.0, 2.0))  # (0, 1)
            loc = torch.cat([weights, share.unsqueeze(-1)], -1)
            pyro.sample("x", dist.Normal(loc, 0.5).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("weights", dist.Dirichlet(torch.full((3,), 2.0)))
            pyro.sample("share", dist.Beta(1.5, 1.5))

    target = PyroModel(model, guide)
    target.check_points(torch.zeros(5, X_DIM))
    assert target.sites == {"weights": torch.Size([3]), "share": torch.Size([])} and target.z_dim == 3
    u = torch.randn(7, 5, 3)
    values = target.latents(u)
    assert values["weights"].shape == (7, 5, 3) and torch.allclose(values["weights"].sum(-1), torch.ones(7, 5))
    assert ((values["share"] > 0) & (values["share"] < 1)).all() and torch.allclose(target.flat(values), u, atol=1e-5)
    # the Jacobian is the change of density: log p(u) = log p(T(u)) + log|det dT/du| (Beta's: sigmoid')
    share_u = u[..., 2]
    expected = torch.log(torch.sigmoid(share_u) * (1 - torch.sigmoid(share_u)))
    weights_t = torch.distributions.biject_to(torch.distributions.constraints.simplex)
    expected = expected + weights_t.log_abs_det_jacobian(u[..., :2], values["weights"])
    assert torch.allclose(target.log_abs_det_jacobian(u), expected, atol=1e-5)
    x = torch.rand(5, X_DIM)
    iw = E.iwae(model, guide, x, k=3000)
    ais = E.ais(model, guide, x, num_steps=200, num_chains=8, num_leapfrog=5)
    assert abs(ais.mean - iw.mean) < 0.05


def _linear(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ torch.ones(2, X_DIM), 0.5).to_event(1), obs=x)


def _guide_of(*sites):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            for name, fn in sites:
                pyro.sample(name, fn)

    return guide


@pytest.mark.parametrize("guide, message", [
    (_guide_of(), "the guide samples no site 'z' of the model's latents"),
    (_guide_of(("z", dist.Normal(torch.zeros(2), 1.0).to_event(1)), ("aux", dist.Normal(0.0, 1.0))),
     "the guide samples 'aux', which the model does not"),
    (_guide_of(("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))), r"shape \(2,\) per datapoint in the model and \(3,\)"),
])
def test_a_guide_that_does_not_propose_exactly_the_models_latents_is_refused_before_any_estimate(guide, message):
    for estimate in (lambda: E.iwae(_linear, guide, torch.zeros(4, X_DIM), k=5),
                     lambda: E.ais(_linear, guide, torch.zeros(4, X_DIM), num_steps=3, num_chains=2)):
        with pytest.raises(ValueError, match=message):
            estimate()


def test_a_guide_over_the_real_line_for_a_positive_site_is_refused():
    with pytest.raises(ValueError, match="'tau' has support GreaterThan.*LogNormal or Gamma"):
        E.iwae(GammaPrecision().model, _guide_of(("tau", dist.Normal(1.0, 0.1))), torch.zeros(4, X_DIM), k=5)


def test_a_plate_of_another_name_and_a_model_that_does_not_broadcast_over_particles_are_named():
    def batch_plate(x):
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"it is in pyro.plate\('batch'\): name the datapoints' plate 'data'"):
        E.iwae(batch_plate, batch_plate, torch.zeros(4), k=5)

    def no_particles(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1).expand(-1, X_DIM), 1.0).to_event(1), obs=x)  # assumes z is (n,)

    with pytest.raises(ValueError, match="fail with particles in a plate left of pyro.plate.*must broadcast"):
        E.iwae(no_particles, _guide_of(("z", dist.Normal(0.0, 1.0))), torch.zeros(4, X_DIM), k=5)


def test_data_with_a_nan_is_refused_before_it_makes_the_estimate_nan():
    x = torch.zeros(4, X_DIM)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="x holds NaN or infinite values"):
        E.iwae(_linear, _guide_of(("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))), x, k=5)
    with pytest.raises(ValueError, match=r"x must be a torch tensor .*got a numpy.ndarray; torch.as_tensor\(x, dtype=torch.float32\)"):
        E.iwae(_linear, _guide_of(("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))), x.numpy(), k=5)


def test_the_estimators_that_take_a_program_are_named_and_exact_log_px_asks_for_a_vae():
    from pyro_vae.model import OWN_PROGRAM_ESTIMATORS

    taking = {name for name in E.__all__ if getattr(getattr(E, name), "takes_pyro_programs", False)}
    assert taking == set(OWN_PROGRAM_ESTIMATORS.replace(" and ", ", ").split(", "))
    truth = GammaPrecision()
    with pytest.raises(TypeError, match="exact log p\\(x\\) reads a trained pyro-vae VAE"):
        E.exact_log_px(truth.model, truth.sample(4))


def _independent_normals(x):
    """z ~ N(0, I), x | z ~ N(z, I): the posterior N(x / 2, I / 2) is a diagonal Gaussian."""
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(X_DIM), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def test_the_gap_report_on_a_program_splits_the_inference_gap_as_the_closed_form_does():
    """With a guide that ignores x, q = N(0, I), the inference gap is KL(q || N(x/2, I/2)) =
    sum_j (1/2 - log(2)/2 + x_j^2 / 4); the posterior is in q*'s family, so q* reaches log p(x)
    (a fit that stops in the noise of its gradient estimate falls about 0.04 nats short here)."""
    torch.manual_seed(0)
    x = torch.randn(10, X_DIM) * 2**0.5
    exact = dist.Normal(0.0, 2**0.5).log_prob(x).sum(-1)
    kl = (0.5 - 0.5 * math.log(2) + x**2 / 4).sum(-1)
    report = E.gap_report(_independent_normals, _guide_of(("z", dist.Normal(torch.zeros(X_DIM), 1.0).to_event(1))), x, k=2000)
    assert abs(report["elbo_local_gaussian"].mean - exact.mean().item()) < 0.01
    assert abs(report["summary"]["approximation_gap"]) < 0.01
    assert abs(report["summary"]["amortization_gap"] - kl.mean().item()) < 0.2
    assert report["elbo_local_gaussian"].settings["lr_schedule"] == "half cosine to lr * 0.01"


def test_local_gaussians_on_a_positive_latent_stay_below_the_exact_log_px():
    """q* over the unconstrained log tau, pushed onto tau > 0: its ELBO is a lower bound (up to
    the final estimate's noise) and close to the Student-t log p(x)."""
    truth = GammaPrecision()
    torch.manual_seed(1)
    x = truth.sample(10)
    local = E.optimise_local_gaussians(truth.model, truth.guide, x)
    below = truth.log_px(x).double() - local.per_datapoint
    assert below.min() > -0.05 and 0 < below.mean() < 0.1


def test_active_units_of_a_program_read_the_guides_mean_of_each_site():
    truth = GammaPrecision()
    torch.manual_seed(1)
    x = truth.sample(10)

    def reads_x(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("tau", dist.LogNormal(-torch.log(x.pow(2).mean(-1)), 0.3))

    assert E.active_units(truth.model, reads_x, x)["active_units"] == 1
    assert E.active_units(truth.model, truth.guide, x)["active_units"] == 0  # LogNormal(0, 1) whatever x is


def test_a_latent_whose_support_has_no_map_from_the_real_line_is_named():
    class Odd(dist.Normal):  # a support torch's biject_to does not know
        support = torch.distributions.constraints.dependent

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", Odd(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1), 1.0).expand(z.shape + (X_DIM,)).to_event(1), obs=x)

    with pytest.raises(ValueError, match="latent site 'z' has support .*which torch maps onto from no unconstrained space"):
        E.ais(model, _guide_of(("z", Odd(0.0, 1.0))), torch.zeros(3, X_DIM), num_steps=2)


def test_a_model_that_subsamples_its_data_plate_is_named():
    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=2) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros(X_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x[idx])

    with pytest.raises(ValueError, match=r"the model subsamples pyro.plate\('data'\) .*drop subsample_size from the plate"):
        E.iwae(model, _guide_of(("z", dist.Normal(torch.zeros(X_DIM), 1.0).to_event(1))), torch.zeros(6, X_DIM), k=5)


def test_a_scaled_site_is_estimated_without_its_scale_and_the_warning_points_at_the_callers_line():
    """A KL weight or any poutine.scale changes the training objective, not the model: log p(x) is
    the model's own, as with no scale, and a warning says so, attributed to the user's call."""

    def weighted(x):
        with pyro.plate("data", x.shape[0]):
            with pyro.poutine.scale(scale=0.5):
                z = pyro.sample("z", dist.Normal(torch.zeros(X_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    guide = _guide_of(("z", dist.Normal(torch.zeros(X_DIM), 1.0).to_event(1)))
    x = torch.randn(5, X_DIM)
    torch.manual_seed(0)
    plain = E.iwae(_independent_normals, guide, x, k=50)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"scales the log-density of 'z' by 0.5 \(poutine.scale\); log p\(x\) is estimated without") as caught:
        scaled = E.iwae(weighted, guide, x, k=50)
    assert torch.equal(plain.per_datapoint, scaled.per_datapoint)
    assert caught[0].filename == __file__
