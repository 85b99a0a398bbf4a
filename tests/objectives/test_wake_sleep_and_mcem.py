"""Wake-sleep, RWS and MCEM: on probabilistic PCA they move to the closed-form ML solution."""

import pytest
import torch

from pyro_vae import config as C
from pyro_vae.components.registry import OBJECTIVES
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.estimators import exact_log_px
from pyro_vae.training.trainer import Trainer


def ppca_ml_loglik(x: torch.Tensor, z_dim: int, sigma: float) -> float:
    """Average log-likelihood at the ML solution of PPCA with known noise (Tipping & Bishop 1999):
    b = mean, W W^T = U_q (Lambda_q - sigma^2 I) U_q^T from the sample covariance."""
    x = x.double()
    lam, U = torch.linalg.eigh(torch.cov(x.T, correction=0))
    lam, U = lam.flip(0), U.flip(1)
    W = U[:, :z_dim] * (lam[:z_dim] - sigma**2).clamp(min=0).sqrt()
    return LinearGaussian(W, x.mean(0), sigma).log_marginal(x).mean().item()


@pytest.mark.parametrize(
    "objective,guide,optimizer,epochs,tolerance",
    [
        ("wake_sleep", "diag_normal", {"name": "adam", "lr": 0.02}, 30, 0.15),
        # the sleep phase's dreams per step, a fifth of the batch or five times it: the same fixed point
        # (a fifth: a noisier sleep gradient, here under Adagrad, whose steps shrink as it goes)
        ({"name": "wake_sleep", "dream_batch_size": 10}, "diag_normal", {"name": "adagrad", "lr": 0.3}, 60, 0.15),
        ({"name": "wake_sleep", "dream_batch_size": 250}, "diag_normal", {"name": "adam", "lr": 0.02}, 30, 0.15),
        # the paper's optimizer with its step size annealed (exponentially, to a tenth over the run)
        ("wake_sleep", "diag_normal", {"name": "adagrad", "lr": 0.3, "schedule": {"name": "exponential", "gamma": 0.1 ** (1 / 60)}}, 60, 0.15),
        ("wake_sleep", "full_normal", {"name": "adam", "lr": 0.02}, 30, 0.15),
        ("wake_sleep", "iaf", {"name": "adam", "lr": 0.02}, 60, 0.3),
        ("rws", "diag_normal", {"name": "adam", "lr": 0.02}, 30, 0.1),
        ("rws", "full_normal", {"name": "adam", "lr": 0.02}, 30, 0.1),
        ("mcem", "diag_normal", {"name": "adagrad", "lr": 0.05}, 40, 0.3),
    ],
)
def test_baselines_reach_ppca_maximum_likelihood(tmp_path, objective, guide, optimizer, epochs, tolerance):
    """Every guide of the registry trains under wake-sleep (its sleep phase fits q to dreams)."""
    cfg = C.from_dict({
        "name": "ppca", "device": "cpu",
        "data": {"name": "synthetic", "n_train": 500, "n_test": 50, "x_dim": 5, "z_dim": 2, "noise_std": 0.5},
        "model": {"z_dim": 2, "likelihood": {"name": "gaussian", "variance": "fixed", "fixed_std": 0.5}, "guide": {"name": guide},
                  "encoder": {"name": "mlp", "hidden": []}, "decoder": {"name": "mlp", "hidden": []}},
        "objective": objective if isinstance(objective, dict) else {"name": objective}, "optimizer": optimizer,
        "training": {"epochs": epochs, "batch_size": 50},
    })
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    x = trainer.data.x_train
    ml = ppca_ml_loglik(x, 2, 0.5)
    before = exact_log_px(trainer.vae, x).mean().item()
    trainer.train()
    after = exact_log_px(trainer.vae, x).mean().item()
    assert ml - before > 10  # started far away
    assert ml - after < tolerance
    assert after <= ml + 1e-3  # nothing beats maximum likelihood


def test_mcem_chains_persist_through_resume(tmp_path):
    base = {
        "name": "m", "device": "cpu", "data": {"name": "synthetic", "n_train": 40, "n_test": 10},
        "model": {"z_dim": 2, "likelihood": {"name": "gaussian", "variance": "learned"},
                  "encoder": {"name": "mlp", "hidden": [4]}, "decoder": {"name": "mlp", "hidden": [4]}},
        "objective": {"name": "mcem", "m_steps": 2}, "optimizer": {"name": "adagrad", "lr": 0.05},
        "training": {"batch_size": 20},
    }
    full = Trainer(C.from_dict({**base, "training": {"batch_size": 20, "epochs": 2}}), tmp_path / "full", progress=False)
    full.train()
    first = Trainer(C.from_dict({**base, "training": {"batch_size": 20, "epochs": 1}}), tmp_path / "split", progress=False)
    first.train()
    second = Trainer(C.from_dict({**base, "training": {"batch_size": 20, "epochs": 2}}), tmp_path / "split", progress=False)
    second.train(resume=True)
    assert torch.equal(full.objective.chains, second.objective.chains)
    for a, b in zip(full.vae.parameters(), second.vae.parameters()):
        assert torch.equal(a, b)
    # The encoder is not trained by MCEM.
    fresh = Trainer(C.from_dict({**base, "training": {"batch_size": 20, "epochs": 1}}), tmp_path / "fresh", progress=False)
    for a, b in zip(fresh.vae.encoder.parameters(), full.vae.encoder.parameters()):
        assert torch.equal(a, b)


def test_evaluating_an_mcem_run_with_an_estimator_that_draws_from_its_untrained_encoder_warns(tmp_path):
    """MCEM trains no encoder: ELBO and IWAE of its run are valid but loose bounds, and the warning
    says which estimators to use instead; those draw nothing from q(z|x) and stay silent."""
    import warnings

    from pyro_vae.runs.evaluate import evaluate_run

    cfg = {"name": "m", "device": "cpu", "data": {"name": "synthetic", "n_train": 20, "n_test": 6},
           "model": {"z_dim": 2, "encoder": {"name": "mlp", "hidden": [4]}, "decoder": {"name": "mlp", "hidden": [4]},
                     "likelihood": {"name": "gaussian"}},
           "objective": {"name": "mcem", "m_steps": 1}, "training": {"batch_size": 10, "epochs": 1}}
    Trainer(C.from_dict(cfg), tmp_path / "run", progress=False).train()
    for estimator, options in (("iwae", {"k": 5}), ("elbo", {}), ("ais", {"ais_start": "encoder", "ais_steps": 3, "ais_chains": 2})):
        with pytest.warns(UserWarning, match=rf"objective 'mcem' trains no encoder.* --estimator {estimator}[ ,].*"
                                             r"with --estimator hmc or ais \(from the prior\)"):
            evaluate_run(tmp_path / "run", estimator, progress=False, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_run(tmp_path / "run", "ais", ais_steps=3, ais_chains=2, progress=False)
        evaluate_run(tmp_path / "run", "hmc", hmc_samples=3, progress=False)


def test_mcem_takes_m_steps_per_batch():
    objective = OBJECTIVES.build("mcem", {"m_steps": 5})
    assert objective.m_steps == 5 and objective.num_leapfrog == 10 and objective.target_accept == 0.9


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_wake_trains_only_the_decoder_and_sleep_only_the_encoder_each_scaled_to_the_data_set(likelihood):
    """Wake-sleep's two phases reach disjoint parameters: the wake term's gradient the decoder's,
    the sleep term's the encoder's. Each is a sum over its points scaled to N (N/M for the M data
    points, N/D for D dreams), so repeating every dream twice leaves the encoder's gradient as it is.
    Under a per-parameter adaptive optimizer (Adagrad) a relative weight between the phases would
    therefore change nothing but the balance against the weight prior. A Gaussian decoder's dreams
    are reparameterized draws: the sleep phase must not reach the decoder through them."""
    import pyro

    from pyro_vae.config import from_dict
    from pyro_vae.config.build import vae_from_config

    cfg = from_dict({"name": "ws", "data": {"name": "synthetic"}, "model": {
        "z_dim": 2, "likelihood": {"name": likelihood}, "encoder": {"name": "mlp", "hidden": [5]},
        "decoder": {"name": "mlp", "hidden": [5]}}})
    torch.manual_seed(0)
    vae = vae_from_config(cfg.model, (6,))
    x = torch.rand(10, 6).bernoulli()
    simulate = vae.simulate

    def gradients(x, dream_seed, repeat=1):
        def dreams(n):  # the sleep phase's dreams: drawn from the model (as wake-sleep does) with a fixed seed
            torch.manual_seed(dream_seed)
            return tuple(t.repeat(repeat, 1) for t in simulate(n // repeat))

        vae.simulate = dreams
        vae.zero_grad(set_to_none=True)
        pyro.set_rng_seed(1)  # the wake phase's draws from q, the same every time
        OBJECTIVES.build("wake_sleep", {"dream_batch_size": 4 * repeat}).loss(vae, x, None, num_data=100).backward()
        return {name: p.grad.clone() for name, p in vae.named_parameters()}

    base = gradients(x, dream_seed=10)
    encoder = [n for n in base if n.startswith("encoder.")]
    decoder = [n for n in base if n.startswith("decoder.")]
    assert encoder and decoder and set(encoder) | set(decoder) == set(base)
    assert all(base[n].abs().sum() > 0 for n in base)
    twice = gradients(x, dream_seed=10, repeat=2)  # every dream twice, scaled N/8
    other_x = gradients(1 - x, dream_seed=10)
    other_sleep = gradients(x, dream_seed=20)
    for n in encoder:  # the sleep phase alone: the data do not reach it, the dreams' count does not scale it
        assert torch.allclose(twice[n], base[n], rtol=1e-5, atol=1e-6) and torch.equal(other_x[n], base[n])
        assert not torch.equal(other_sleep[n], base[n])
    for n in decoder:  # the wake phase alone: the dreams do not reach it
        assert torch.equal(other_sleep[n], base[n]) and not torch.equal(other_x[n], base[n])
