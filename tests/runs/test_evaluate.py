"""Evaluating a run: settings checked before loading, file names by settings, splits and subsets."""

import json
import math
from pathlib import Path

import pytest

from pyro_vae.cli import main


def test_evaluate_run_rejects_bad_settings_from_python_too(tmp_path):
    from pyro_vae.errors import ConfigError
    from pyro_vae.runs.evaluate import evaluate_run

    for kwargs, message in [({"n": -5}, "n must be a whole number >= 1"), ({"k": 0}, "k must be"),
                            ({"ais_chains": 2.5}, "ais_chains must be"), ({"memory_gb": 0}, "memory_gb must be"),
                            ({"ais_start": "posterior"}, "ais_start must be 'prior' or 'encoder'"),
                            ({"ais_schedule": "cosine"}, "ais_schedule must be 'sigmoid' or 'linear'"),
                            # a seed of 1.5 was used as 1 and recorded as 1.5; -1 named a file seed-1
                            ({"seed": 1.5}, r"seed must be a whole number >= 0, got 1.5"), ({"seed": -1}, "seed must be"),
                            ({"seed": 2**63}, r"seed must be below 2\*\*63")]:
        with pytest.raises(ConfigError, match=message):
            evaluate_run(tmp_path, **kwargs)  # checked before the run folder is read


def test_evaluating_more_points_than_the_split_holds_says_so(tmp_path):
    """``--n`` above the split's size evaluates the whole split, says so, and records the real n."""
    from pyro_vae.runs.evaluate import evaluate_run

    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    with pytest.warns(UserWarning, match=r"n = 500 \(--n\) is more than the 100 points of the test split"):
        result = evaluate_run(run, estimator="elbo", n=500, progress=False)
    assert result["n"] == 100 and Path(result["path"]).name == "eval_elbo_test.json"  # all of it: no n in the name


def test_an_evaluation_with_other_settings_is_written_beside_the_others_not_over_them(tmp_path):
    """A quick `--k 10` check must not replace the k = 5000 estimate a paper reports: each file is
    named by the estimator's settings, the split, the subset and the seed; the same evaluation run
    again replaces its own file."""
    from pyro_vae.runs.evaluate import default_output_name, evaluate_run

    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    first = evaluate_run(run, estimator="iwae", k=20, progress=False)
    quick = evaluate_run(run, estimator="iwae", k=3, n=10, progress=False)
    reseeded = evaluate_run(run, estimator="iwae", k=20, seed=1, progress=False)
    assert [Path(r["path"]).name for r in (first, quick, reseeded)] == [
        "eval_iwae_k20_test.json", "eval_iwae_k3_test_n10.json", "eval_iwae_k20_test_seed1.json"]
    assert json.loads((run / "eval_iwae_k20_test.json").read_text())["settings"]["k"] == 20  # still there, untouched
    assert json.loads((run / "eval_iwae_k20_test.json").read_text())["value"] == first["value"]
    assert evaluate_run(run, estimator="iwae", k=20, progress=False)["value"] == first["value"]  # the same run again: its own file
    settings = dict(k=100, ais_steps=200, ais_chains=4, ais_start="prior", ais_schedule="sigmoid", hmc_samples=50, hmc_chains=2,
                    hmc_warmup=200, seed=0)
    assert default_output_name("hmc", "test", settings) == "eval_hmc_samples50_test.json"  # the defaults: the name it always had
    assert default_output_name("hmc", "test", dict(settings, hmc_chains=4, hmc_warmup=0)) == "eval_hmc_samples50_chains4_warmup0_test.json"
    assert default_output_name("ais", "test", dict(settings, ais_start="encoder"), subset=50) == \
        "eval_ais_steps200_chains4_encoder_test_n50.json"
    assert default_output_name("gaps", "train", dict(settings, ais_schedule="linear")) == \
        "eval_gaps_k100_steps200_chains4_linear_train.json"
    assert default_output_name("exact", "test", dict(settings, seed=2)) == "eval_exact_test_seed2.json"


def test_evaluate_exact_on_a_linear_gaussian_run(tmp_path, capsys):
    """--estimator exact gives the closed-form log p(x) of a linear-Gaussian run, which IWAE approaches."""
    from pyro_vae.estimators import exact_log_px
    from pyro_vae.runs.load import load_run

    run = tmp_path / "linear"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=2",
                 "--set", "model.decoder.hidden=[]", "--set", "model.likelihood={name: gaussian, variance: fixed, fixed_std: 0.5}"]) == 0
    assert main(["evaluate", str(run), "--estimator", "exact", "--n", "20", "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--estimator", "iwae", "--k", "2000", "--n", "20", "--no-progress"]) == 0
    exact = json.loads((run / "eval_exact_test_n20.json").read_text())
    iwae = json.loads((run / "eval_iwae_k2000_test_n20.json").read_text())
    trained = load_run(run)
    assert exact["n"] == 20 and exact["settings"] == {"model": "linear-Gaussian, closed form"}
    assert abs(exact["value"] - exact_log_px(trained.vae, trained.x_test[:20]).mean().item()) < 1e-9
    assert exact["value"] - 0.2 < iwae["value"] <= exact["value"] + 0.02  # a lower bound, close with k = 2000


def test_evaluating_the_train_split_of_a_dynamically_binarized_run_scores_one_seeded_draw(tmp_path):
    """Dynamic binarization has no fixed training set: `--split train` scores the draw seeded by
    data.binarize_seed, the same at every call (grey levels would be outside Bernoulli's support)."""
    import numpy as np

    np.savez(tmp_path / "grey.npz", x=np.random.default_rng(0).random((40, 6)).astype(np.float32))
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="dropped variance=learned"):  # tiny.yaml's Gaussian option
        assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1",
                     "--set", f"data={{name: npz, path: {tmp_path / 'grey.npz'}, binarize: dynamic}}",
                     "--set", "model.likelihood.name=bernoulli", "--set", "model.z_dim=2", "--set", "training.batch_size=12"]) == 0
    values = []
    for _ in range(2):
        assert main(["evaluate", str(run), "--split", "train", "--k", "5", "--no-progress"]) == 0
        values.append(json.loads((run / "eval_iwae_k5_train.json").read_text())["value"])
    assert values[0] == values[1] and math.isfinite(values[0])
