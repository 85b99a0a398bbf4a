"""The chains behind the App. D, AIS and MCEM numbers as ArviZ InferenceData: a posterior and the
sampler's statistics, readable by az.summary and az.plot_trace, from Python and from the CLI."""

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from pyro_vae import estimators as E  # noqa: E402
from pyro_vae.cli import main  # noqa: E402
from pyro_vae.config.build import vae_from_config  # noqa: E402
from pyro_vae.mcmc.hmc import _arviz  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402


@pytest.fixture
def vae_and_x():
    torch.manual_seed(0)
    return vae_from_config(tiny_config().model, (6,)), torch.randn(3, 6)


def test_the_app_d_estimate_carries_its_hmc_chains(vae_and_x):
    az = _arviz()
    vae, x = vae_and_x
    est = E.hmc_marginal_likelihood(vae, x, num_samples=8, num_warmup=4, num_chains=2)
    idata = est.chains
    assert set(idata.groups()) >= {"posterior", "sample_stats"}
    assert idata.posterior["z"].shape == (2, 8, 3, 2)  # chain, draw, datapoint, latent_dim
    for stat in ("acceptance_rate", "diverging", "energy", "step_size"):
        assert idata.sample_stats[stat].shape == (2, 8, 3)
    assert est.diagnostics["divergences"] == int(idata.sample_stats["diverging"].sum())
    summary = az.summary(idata, var_names=["z"])
    assert len(summary) == 3 * 2 and "r_hat" in summary.columns
    az.plot_trace(idata, var_names=["z"], coords={"datapoint": [0]})


def test_ais_carries_each_chains_final_state_and_log_weight(vae_and_x):
    vae, x = vae_and_x
    est = E.ais(vae, x, num_steps=5, num_chains=4, num_leapfrog=2)
    assert est.chains.posterior["z"].shape == (4, 1, 3, 2)
    log_w = torch.as_tensor(est.chains.sample_stats["log_weight"].values)  # (chain, draw, datapoint)
    assert torch.allclose(log_w.logsumexp(0)[0] - torch.log(torch.tensor(4.0, dtype=log_w.dtype)), est.per_datapoint, atol=1e-6)


def test_the_mcem_e_step_chains_read_as_inference_data(tmp_path):
    from pyro_vae.training.trainer import Trainer

    trainer = Trainer(tiny_config(objective={"name": "mcem", "m_steps": 1}), tmp_path / "r", progress=False)
    trainer.train()
    idata = trainer.objective.to_inference_data()
    assert idata.posterior["z"].shape == (1, 1, 60, 2) and idata.sample_stats["step_size"].shape == (1, 1, 60)


def test_evaluate_saves_the_chains_for_arviz(tmp_path, capsys):
    az = _arviz()
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    assert main(["evaluate", str(run), "--estimator", "hmc", "--n", "3", "--hmc-samples", "5", "--hmc-warmup", "3",
                 "--save-chains", str(tmp_path / "chains.nc"), "--no-progress"]) == 0
    idata = az.from_netcdf(str(tmp_path / "chains.nc"))
    assert idata.posterior["z"].shape == (2, 5, 3, 2) and "energy" in idata.sample_stats
    assert main(["evaluate", str(run), "--estimator", "iwae", "--save-chains", str(tmp_path / "x.nc")]) == 2
    assert "--save-chains saves the Markov chains of --estimator hmc or ais" in capsys.readouterr().err
