"""Counts written as researchers write them (``5e3``, ``1e7``) are the whole numbers they mean, in a
config file, a ``--set``, a component's options, a command-line flag and an estimator's arguments;
``2.5``, ``true`` and ``"5"`` are refused with the setting named."""

import numpy as np
import pytest
import torch
import yaml

from pyro_vae import config as C
from pyro_vae import estimators as E
from pyro_vae.cli import main
from pyro_vae.errors import ConfigError
from pyro_vae.user_numbers import as_whole_number, count, is_real_number, parse_whole_number, seed
from pyro_vae.data.linear_gaussian import LinearGaussian
from tests.conftest import tiny_config, tiny_config_dict


def test_the_forms_of_a_whole_number():
    assert [as_whole_number(v) for v in (5e3, 5000.0, 5000, -2.0)] == [5000, 5000, 5000, -2]
    assert all(type(as_whole_number(v)) is int for v in (5e3, 1e7, 20.0))
    assert as_whole_number(2.5) == 2.5 and as_whole_number(True) is True and as_whole_number("5") == "5"
    assert [parse_whole_number(t) for t in ("5000", "5e3", "5E3", "5000.0", "1.5e3", " 7 ", "1_000")] == [5000, 5000, 5000, 5000, 1500, 7, 1000]
    assert parse_whole_number("123456789012345678901") == 123456789012345678901  # exact, not through a float
    assert [parse_whole_number(t) for t in ("2.5", "inf", "nan", "five", "", "1e-3", "1e999999999")] == [None] * 7
    assert count("k", 5e3) == 5000 and count("k", np.int64(7)) == 7 and count("k", torch.tensor(3)) == 3
    assert count("num_warmup", 0, least=0) == 0
    for bad in (2.5, True, "5", None, 0, -1.0, torch.tensor(2.0)):
        with pytest.raises(ValueError, match=r"^k must be a whole number >= 1, got "):
            count("k", bad)
    assert seed("seed", 1e3) == 1000 and seed("seed", 2**63 - 1) == 2**63 - 1
    with pytest.raises(ValueError, match=r"seed must be below 2\*\*63"):
        seed("seed", 2**63)
    assert all(is_real_number(v) for v in (0, 1.5, -2, np.float32(0.5), np.int64(3), float("inf")))
    assert not any(is_real_number(v) for v in (True, np.bool_(True), "0.5", None, torch.tensor(0.5), [1.0]))


def test_a_config_takes_whole_floats_for_counts_and_records_ints(tmp_path):
    cfg = C.load("tiny", ["training.sample_budget=1e3", "training.epochs=2e0", "seed=1e1", "evaluation.k=5e3",
                          "objective.name=iwae", "objective.num_particles=5e0", "model.encoder.hidden=[1.6e1, 8.0]"])
    assert (cfg.training.sample_budget, cfg.training.epochs, cfg.seed, cfg.evaluation.k) == (1000, 2, 10, 5000)
    assert cfg.objective.options["num_particles"] == 5 and cfg.model.encoder.options["hidden"] == [16, 8]
    saved = tmp_path / "config.yaml"
    C.save(cfg, saved)
    text = yaml.safe_load(saved.read_text())
    assert text["training"]["sample_budget"] == 1000 and type(text["training"]["sample_budget"]) is int
    assert text["objective"]["num_particles"] == 5 and type(text["objective"]["num_particles"]) is int
    assert text["model"]["encoder"]["hidden"] == [16, 8] and all(type(h) is int for h in text["model"]["encoder"]["hidden"])
    # a file written with exponents, as a researcher writes a budget
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict()) + "\n")
    raw = yaml.safe_load(path.read_text())
    raw["training"] = {"sample_budget": "1e3", "batch_size": 20}
    path.write_text(yaml.safe_dump(raw).replace("'1e3'", "1e3"))
    assert C.load(str(path)).training.sample_budget == 1000
    # swapping the component keeps a count the new one takes too (it is not dropped as a float)
    raw["objective"] = {"name": "trace_meanfield", "num_particles": 2.0}
    path.write_text(yaml.safe_dump(raw))
    assert C.load(str(path), ["objective.name=iwae"]).objective.options == {"num_particles": 2}
    # options that are floats stay floats
    assert tiny_config(optimizer={"name": "adam", "lr": 1e-3}).optimizer.options["lr"] == 1e-3


@pytest.mark.parametrize("section,message", [
    ({"training": {"sample_budget": 2.5}}, r"training.sample_budget: Input should be a valid integer, got 2.5"),
    ({"training": {"epochs": True}}, r"training.epochs: Input should be a valid integer, got True"),
    ({"objective": {"name": "iwae", "num_particles": 2.5}}, r"option 'num_particles' must be a whole number, got 2.5"),
    ({"model": {"z_dim": 2, "encoder": {"name": "mlp", "hidden": [1.5]}}}, r"option 'hidden' must be a list of whole numbers, got \[1.5\]"),
])
def test_a_count_with_a_fractional_part_or_a_bool_is_refused(section, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**section)


def test_the_command_line_takes_counts_in_exponent_form(tmp_path, capsys):
    run = tmp_path / "run"
    main(["train", "tiny", "--run-dir", str(run), "--set", "training.sample_budget=5e2", "--set", "training.epochs=1"])
    main(["evaluate", str(run), "--k", "2e1", "--n", "1e1", "--seed", "1e0"])
    out = capsys.readouterr().out
    assert "iwae on test (n=10" in out and "[k=20," in out and "seed1.json" in out
    for flag, value in (("--k", "2.5"), ("--n", "1e-1"), ("--seed", "inf")):
        with pytest.raises(SystemExit):
            main(["evaluate", str(run), flag, value])
        assert "expected a whole number >= " in capsys.readouterr().err


@pytest.fixture
def linear_gaussian():
    truth = LinearGaussian.random(5, 2, 0.5, seed=0)
    x, _ = truth.sample(6, seed=1)
    return x, E.exact_vae(truth).double()


def test_estimators_take_whole_floats_and_integer_types_and_name_anything_else(linear_gaussian):
    x, vae = linear_gaussian
    torch.manual_seed(0)
    as_int = E.iwae(vae, x, k=50).per_datapoint
    for k in (5e1, np.int64(50), torch.tensor(50)):
        torch.manual_seed(0)
        estimate = E.iwae(vae, x, k=k)
        assert torch.equal(estimate.per_datapoint, as_int) and type(estimate.settings["k"]) is int
    torch.manual_seed(0)
    assert E.ais(vae, x, num_steps=5e0, num_chains=2.0, adapt=False).settings["num_chains"] == 2
    bad = [
        (lambda: E.iwae(vae, x, k=True), r"k must be a whole number >= 1, got True"),  # not IWAE-1 under another name
        (lambda: E.iwae(vae, x, k=2.5), r"k must be a whole number >= 1, got 2.5"),
        (lambda: E.iwae(vae, x, k="50"), r"k must be a whole number >= 1, got '50'"),
        (lambda: E.elbo(vae, x, num_samples=1.5), r"num_samples must be a whole number >= 1"),
        (lambda: E.ais(vae, x, num_steps=2.5), r"num_steps must be a whole number >= 1, got 2.5"),
        (lambda: E.ais(vae, x, num_steps=3, num_leapfrog=0.5), r"num_leapfrog must be a whole number >= 1"),
        (lambda: E.bdmc(vae, num_points=1.5), r"num_points \(the points BDMC simulates\) must be a whole number >= 1"),
        (lambda: E.hmc_marginal_likelihood(vae, x, num_warmup=-1), r"num_warmup must be a whole number >= 0, got -1"),
        (lambda: E.hmc_marginal_likelihood(vae, x, thin=0.5), r"thin must be a whole number >= 1"),
        (lambda: E.optimise_local_gaussians(vae, x, steps=10.5), r"steps must be a whole number >= 0"),
        (lambda: E.gap_report(vae, x, k=10, ais_steps=2.5), r"ais_steps must be a whole number >= 1, got 2.5"),
        (lambda: E.active_units(vae, x, num_samples=1), r"num_samples must be a whole number >= 2, got 1"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message):
            call()

