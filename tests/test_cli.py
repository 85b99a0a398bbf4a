"""The command line end to end on the tiny config: train, resume, evaluate, sample, plot, errors."""

import json
from pathlib import Path

import pytest

from pyro_vae.cli import main
from pyro_vae.errors import ConfigError


def test_cli_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=2",
                 "--set", "model.z_dim=2", "--evaluate"]) == 0
    out = capsys.readouterr().out
    assert "test ELBO" in out and "iwae on test" in out and "k=100" in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch ")] == ["epoch 1", "epoch 2"]  # one line an epoch
    assert (run / "config.yaml").exists() and (run / "checkpoint.pt").exists() and (run / "metrics.csv").exists()
    # resume for one more epoch
    assert main(["train", str(run), "--resume", "--set", "training.epochs=3", "--no-progress"]) == 0
    assert (run / "metrics.csv").read_text().count("\n") == 4
    assert main(["train", str(run), "--resume", "--set", "model.z_dim=3", "--no-progress"]) == 2
    assert "model.z_dim: 2 -> 3" in capsys.readouterr().err
    assert main(["train", str(run), "--allow-changes", "--no-progress"]) == 2
    assert "--allow-changes applies to a resumed run only" in capsys.readouterr().err
    assert main(["train", str(run), "--resume", "--set", "training.epochs=2", "--no-progress"]) == 0  # already past it
    assert "nothing to train: the run is at epoch 3" in capsys.readouterr().out
    assert (run / "metrics.csv").read_text().count("\n") == 4
    for est in ("elbo", "iwae", "ais", "hmc"):
        args = ["evaluate", str(run), "--estimator", est, "--n", "5", "--k", "20", "--ais-steps", "5", "--ais-chains", "2",
                "--hmc-samples", "5", "--no-progress"]
        assert main(args) == 0
        written = {"elbo": "eval_elbo_test_n5", "iwae": "eval_iwae_k20_test_n5", "ais": "eval_ais_steps5_chains2_test_n5",
                   "hmc": "eval_hmc_samples5_test_n5"}[est]  # named by what sets the number apart
        result = json.loads((run / f"{written}.json").read_text())
        assert result["n"] == 5 and result["split"] == "test" and "stderr" in result and result["settings"]
        assert result["data"]["binarize"] == "none" and result["trained_epochs"] == 3
        if est == "ais":  # its datapoints in chunks under --memory-gb (here, all 5 in one)
            assert result["settings"]["memory_gb"] == 2.0 and result["settings"]["chunk_datapoints"] == 5
        if est == "hmc":  # how many points' chains disagree, in the JSON and printed
            diagnostics = result["diagnostics"]
            assert 0 <= diagnostics["datapoints_rhat_above"] <= 5 and diagnostics["rhat_threshold"] == 1.1
            assert (f"HMC chains: R-hat > 1.1 in some latent dimension at {diagnostics['datapoints_rhat_above']} of 5 datapoints"
                    in capsys.readouterr().out)
        if est == "iwae":  # Burda et al.'s active units beside it, over the same points
            units = result["diagnostics"]["active_units"]
            assert units["n"] == 5 and units["num_latents"] == 2 and units["threshold"] == 0.01
            assert f"active units: {units['active_units']} of 2 (Cov_x E_q[z_u] > 0.01" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--estimator", "gaps", "--n", "4", "--k", "20", "--ais-steps", "5", "--ais-chains", "3", "--no-progress"]) == 0
    gaps = json.loads((run / "eval_gaps_k20_steps5_chains3_test_n4.json").read_text())
    s = gaps["summary"]
    assert abs(s["inference_gap"] - s["approximation_gap"] - s["amortization_gap"]) < 1e-6
    assert len(gaps["per_datapoint"]["ais"]) == 4 and gaps["settings"]["log_px_from"] == "ais"
    assert gaps["settings"]["ais_num_chains"] == 3 and gaps["estimates"]["ais"]["settings"]["num_chains"] == 3  # --ais-chains reaches it
    amortization = gaps["per_datapoint"]["amortization_gap"]
    mean = sum(amortization) / 4
    spread = (sum((a - mean) ** 2 for a in amortization) / 3) ** 0.5
    assert abs(gaps["stderr"] - spread / 2) < 1e-9 and set(gaps["summary_stderr"]) == set(s)  # every gap with its error bar
    units = gaps["estimates"]["iwae"]["diagnostics"]["active_units"]  # beside its IWAE, as above
    assert units["n"] == 4 and units["num_latents"] == 2
    assert f"active units: {units['active_units']} of 2 (Cov_x E_q[z_u] > 0.01" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--estimator", "bdmc", "--n", "6", "--ais-steps", "20", "--ais-chains", "2", "--no-progress"]) == 0
    bdmc = json.loads((run / "eval_bdmc_steps20_chains2_simulated_n6.json").read_text())
    assert bdmc["n"] == 6 and bdmc["split"] == "simulated" and bdmc["settings"]["num_steps"] == 20
    assert len(bdmc["per_datapoint"]["upper"]) == 6 and bdmc["value"] == bdmc["lower"]["value"]
    gap = [u - lo for u, lo in zip(bdmc["per_datapoint"]["upper"], bdmc["per_datapoint"]["lower"])]
    assert abs(bdmc["gap_mean"] - sum(gap) / 6) < 1e-9 and bdmc["gap_max"] == max(gap)
    spread = (sum((g - bdmc["gap_mean"]) ** 2 for g in gap) / 5) ** 0.5
    assert abs(bdmc["gap_stderr"] - spread / 6**0.5) < 1e-9
    assert "bdmc on 6 points simulated from the model: AIS (lower)" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--estimator", "ais", "--ais-schedule", "linear", "--n", "3", "--ais-steps", "5",
                 "--ais-chains", "2", "--no-progress"]) == 0
    assert json.loads((run / "eval_ais_steps5_chains2_linear_test_n3.json").read_text())["settings"]["schedule"] == "linear"
    assert main(["evaluate", str(run), "--estimator", "bdmc", "--ais-start", "encoder"]) == 2
    assert "bdmc runs AIS from the prior" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--estimator", "exact"]) == 2  # an MLP decoder: no closed form
    err = capsys.readouterr().err
    assert "pyro-vae: error: estimator exact: exact log p(x) needs a standard-normal prior, a linear decoder" in err
    # asked of `train --evaluate`, it is refused before training
    fresh = tmp_path / "mlp_exact"
    assert main(["train", "tiny", "--run-dir", str(fresh), "--evaluate", "--set", "evaluation.estimator=exact", "--no-progress"]) == 2
    assert "estimator exact: exact log p(x) needs" in capsys.readouterr().err and not (fresh / "checkpoint.pt").exists()
    assert main(["sample", str(run), "--n", "4"]) == 0
    assert (run / "samples.npy").exists()  # synthetic data is not an image: samples saved as an array
    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    assert (run / "plots" / "elbo_curves.png").exists() and (run / "plots" / "latents.png").exists()
    out = capsys.readouterr().out  # the pictures left out are named, with why
    assert "no samples.png: the data (shape (5,)) are not images" in out and "no manifold.png" in out


def test_cli_image_plots(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "img.npz", x=np.random.default_rng(0).random((60, 8, 8)).astype(np.float32), y=np.arange(60) % 3)
    run = tmp_path / "img"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", f"data={{name: npz, path: {tmp_path / 'img.npz'}}}",
                 "--set", "model.likelihood={name: continuous_bernoulli}", "--set", "training.epochs=1"]) == 0
    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    for name in ("samples", "reconstructions", "manifold", "latents", "elbo_curves"):
        assert (run / "plots" / f"{name}.png").exists(), name
    assert "no " not in capsys.readouterr().out  # an image run with 2-D latents: every picture
    # sample --out: a picture, an array (.npy) on request, and nothing else
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.pdf")]) == 0 and (tmp_path / "s.pdf").exists()
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 64)
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.txt")]) == 2
    # more samples than a picture can show: refused before drawing, with the array named
    assert main(["sample", str(run), "--n", "2501", "--out", str(tmp_path / "big.png")]) == 2
    err = capsys.readouterr().err
    assert "--n 2501: a picture shows at most 2500 samples" in err and f"--out {tmp_path / 'big.npy'}" in err
    assert not (tmp_path / "big.png").exists()
    assert main(["sample", str(run), "--n", "2501", "--out", str(tmp_path / "big.npy")]) == 0
    big = np.load(tmp_path / "big.npy")
    assert big.shape == (2501, 64) and np.isfinite(big).all() and ((big >= 0) & (big <= 1)).all()


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "tiny", "--set", "model.prior.name=gaussian_prior", "--run-dir", str(tmp_path / "r")]) == 2
    assert "Valid prior names" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path), "--estimator", "magic"])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["evaluate", "RUN", "--k", "0"], "argument --k: expected a whole number >= 1, got '0'"),
        (["evaluate", "RUN", "--n", "-5"], "argument --n: expected a whole number >= 1, got '-5'"),  # was x[:-5]: all but 5 points
        (["evaluate", "RUN", "--ais-steps", "ten"], "argument --ais-steps: expected a whole number >= 1, got 'ten'"),
        (["evaluate", "RUN", "--ais-chains", "0"], "argument --ais-chains"),
        (["evaluate", "RUN", "--hmc-samples", "0"], "argument --hmc-samples"),
        (["evaluate", "RUN", "--memory-gb", "0"], "argument --memory-gb: expected a finite number > 0, got '0'"),
        (["evaluate", "RUN", "--memory-gb", "inf"], "argument --memory-gb"),
        (["sample", "RUN", "--n", "0"], "argument --n: expected a whole number >= 1"),
        (["evaluate", "RUN", "--device", "tpu"], "argument --device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["train", "tiny", "--device", "cuda:x"], "argument --device: expected auto, cpu, cuda or cuda:N"),
        # an unknown flag: named in its command's usage, with the nearest flag or the --set setting it means
        (["evaluate", "RUN", "--num-steps", "5"], "pyro-vae evaluate: error: unrecognized arguments: --num-steps 5; did you mean --ais-steps? "
                                                  "`pyro-vae evaluate --help` lists the options"),
        (["train", "tiny", "--epochs", "3"], "pyro-vae train: error: unrecognized arguments: --epochs 3; did you mean --set training.epochs=...?"),
        (["train", "tiny", "--z-dim=3"], "did you mean --set model.z_dim=...?"),
        (["train", "tiny", "--hidden", "3"], "did you mean --set model.decoder.hidden=... or --set model.encoder.hidden=...?"),
        (["data", "fetch", "mnist", "--rot", "d"], "pyro-vae data fetch: error: unrecognized arguments: --rot d; did you mean --root?"),
        (["plot", "RUN", "--zzz"], "pyro-vae plot: error: unrecognized arguments: --zzz; `pyro-vae plot --help` lists the options"),
        (["evaluate", "RUN", "--set", "evaluation.ais_steps=100"], "unrecognized arguments: --set evaluation.ais_steps=100; did you mean "
                                                                   "--ais-steps 100? --set is train's: this command takes its settings as flags"),
        (["sample", "RUN", "--set", "x=1"], "unrecognized arguments: --set x=1; --set is train's: this command takes its settings as flags; "
                                            "`pyro-vae sample --help` lists the options"),
    ],
)
def test_a_bad_flag_is_named_before_anything_is_loaded(tmp_path, capsys, argv, message):
    argv = [str(tmp_path) if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_file_of_a_run_folder_given_for_the_folder_names_the_folder_and_a_file_in_the_way_of_plots_is_named(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    capsys.readouterr()
    for argv in (["evaluate", str(run / "checkpoint.pt"), "--k", "5"], ["show", str(run / "config.yaml")],
                 ["sample", str(run / "metrics.csv")]):
        assert main(argv) == 2
        assert f"is a file; pass the run folder that holds it ({run})" in capsys.readouterr().err
    assert main(["train", str(run / "checkpoint.pt"), "--resume"]) == 2
    assert f"is a file of the run folder '{run}'; pass the folder itself" in capsys.readouterr().err
    (run / "plots").write_text("notes")  # where `plot` draws: named, not replaced or a traceback
    assert main(["plot", str(run)]) == 2
    assert f"the plots folder {run / 'plots'}: {run / 'plots'} is a file, not a folder; move or rename" in capsys.readouterr().err
    assert (run / "plots").read_text() == "notes"


def test_an_override_that_fails_is_named_with_the_file():
    from pyro_vae.config import load

    with pytest.raises(ConfigError, match=r"tiny.yaml with --set model.zdim=3: model.zdim: unknown key \(did you mean model.z_dim\?"):
        load("tiny", ["model.zdim=3"])


@pytest.mark.parametrize("override, suggestion", [
    ("training.lr=0.01", "did you mean optimizer.lr?"),  # a setting of another section
    ("epochs=3", "did you mean training.epochs?"),  # a section's setting written at the top level
    ("data.batch_size=5", "Did you mean training.batch_size?"),  # as an option of a component
    ("optimizer.hidden=[8]", "Did you mean model.decoder.hidden or model.encoder.hidden?"),
])
def test_a_setting_written_in_the_wrong_section_is_named_where_it_belongs(override, suggestion):
    from pyro_vae.config import load

    with pytest.raises(ConfigError) as error:
        load("tiny", [override])
    assert suggestion in str(error.value)


def test_output_paths_are_checked_before_the_work_and_folders_created(tmp_path, capsys):
    """A mistyped --out fails at once with the reason, not after minutes of estimation; a missing
    folder is created."""
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    capsys.readouterr()
    assert main(["evaluate", str(run), "--n", "2", "--k", "5", "--no-progress", "--out", str(blocker / "sub" / "e.json")]) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--n", "2", "--k", "5", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file path" in capsys.readouterr().err
    assert main(["sample", str(run), "--n", "4", "--out", str(blocker / "s.png")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    target = tmp_path / "new" / "deeper" / "e.json"
    assert main(["evaluate", str(run), "--n", "2", "--k", "5", "--no-progress", "--out", str(target)]) == 0
    assert json.loads(target.read_text())["n"] == 2


def test_a_file_at_a_path_the_user_names_is_never_replaced(tmp_path, capsys):
    """--out and --save-chains write new files only (in a run folder, pyro-vae replaces its own);
    the check comes before the work, and the chains are written whole or not at all."""
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("e.json", "chains.nc", "s.png", "s.npy"):
        (mine / name).write_text("the user's own\n")
    capsys.readouterr()
    attempts = [
        ["evaluate", str(run), "--n", "2", "--k", "5", "--no-progress", "--out", str(mine / "e.json")],
        ["evaluate", str(run), "--n", "2", "--estimator", "hmc", "--hmc-samples", "3", "--hmc-warmup", "2", "--no-progress",
         "--save-chains", str(mine / "chains.nc")],
        ["sample", str(run), "--n", "4", "--out", str(mine / "s.npy")],
        ["sample", str(run), "--n", "4", "--out", str(mine / "s.png")],  # not images: s.npy would be written
    ]
    for argv in attempts:
        assert main(argv) == 2
        assert "exists already, and pyro-vae does not replace a file at a path you name" in capsys.readouterr().err
    assert all(p.read_text() == "the user's own\n" for p in mine.iterdir()) and len(list(mine.iterdir())) == 4
    # a new path is written; the evaluation's own file in the run folder is replaced on a second run
    chains = tmp_path / "new" / "chains.nc"
    hmc = ["evaluate", str(run), "--n", "2", "--estimator", "hmc", "--hmc-samples", "3", "--hmc-warmup", "2", "--no-progress"]
    assert main(hmc + ["--save-chains", str(chains)]) == 0 and chains.stat().st_size > 0
    assert main(hmc) == 0 and main(hmc) == 0
    assert [p.name for p in chains.parent.iterdir()] == ["chains.nc"]  # no temporary file left


def test_a_data_root_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "data_root_file"
    blocker.write_text("")
    assert main(["data", "fetch", "mnist", "--root", str(blocker)]) == 2
    assert "data.root (or --root) is" in capsys.readouterr().err
    monkeypatch.setenv("PYRO_VAE_DATA", str(blocker))
    assert main(["data", "fetch", "mnist"]) == 2
    assert "$PYRO_VAE_DATA is" in capsys.readouterr().err


def test_a_run_folder_blocked_by_a_file_fails_before_loading_data(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for run_dir in (blocker, blocker / "sub"):
        assert main(["train", "tiny", "--run-dir", str(run_dir), "--no-progress"]) == 2
        assert f"the run folder (--run-dir) {run_dir}: {blocker} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("command,message", [
    ("train", "interrupted; the last checkpoint is kept (continue with --resume)"),
    ("evaluate", "interrupted; no estimate was written"),
])
def test_an_interrupt_says_what_was_kept(monkeypatch, capsys, command, message):
    import pyro_vae.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"cmd_{command}", interrupted)
    assert cli.main([command, "tiny"]) == 130
    err = capsys.readouterr().err
    assert message in err and (command == "train" or "--resume" not in err)


def test_cli_prints_its_own_warnings_as_one_line(tmp_path, capsys):
    """pyro-vae's warnings read like its errors (no source line, no traceback-like second line);
    other libraries' warnings keep Python's format."""
    import sys
    import warnings

    saved = warnings.formatwarning
    try:
        with warnings.catch_warnings():
            # pytest records warnings; print them as Python does outside a test
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(warnings.formatwarning(m, c, f, n, line))
            warnings.simplefilter("always")
            code = main(["train", "tiny", "--run-dir", str(tmp_path / "r"), "--no-progress",
                         "--set", "training.epochs=1", "--set", "training.batch_size=1000"])
        assert code == 0
        err = capsys.readouterr().err
        assert "pyro-vae: warning: training.batch_size 1000 is larger than the training set (500 points)" in err
        assert "warnings.warn" not in err and "UserWarning" not in err
        other = warnings.formatwarning("torch says", UserWarning, "x.py", 3)
        assert other.startswith("x.py:3: UserWarning: torch says")
    finally:
        warnings.formatwarning = saved


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    """The README's 'From Python' snippet, as written (its run folder moved into tmp_path)."""
    import re

    root = Path(__file__).resolve().parents[1]
    code = re.search(r"## From Python.*?```python\n(.*?)```", (root / "README.md").read_text(), re.S).group(1)
    assert code.count("runs/tiny_student_t") == 2
    monkeypatch.chdir(tmp_path)  # the snippet names a shipped config, found from any folder
    namespace: dict = {}
    exec(code.replace("runs/tiny_student_t", str(tmp_path / "run")), namespace)
    out = capsys.readouterr().out
    assert re.search(r"iwae: -\d+\.\d{3} \+- \d\.\d{3} nats \(n=100\) \[k=1000, memory_gb=", out)
    assert re.search(r"ais: -\d+\.\d{3} \+- \d\.\d{3} nats \(n=20\) \[.*num_steps=200", out)
    assert namespace["later"].config.model.prior.name == "student_t" and namespace["samples"].shape == (16, 5)
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_folder_where_a_run_file_goes_is_named_not_a_traceback(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    (run / "run.json").unlink()
    (run / "run.json").mkdir()
    capsys.readouterr()
    assert main(["train", str(run), "--resume", "--no-progress", "--set", "training.epochs=2"]) == 2
    assert f"{run / 'run.json'} is a folder where pyro-vae writes a file; move or rename it" in capsys.readouterr().err
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # the atomic write left nothing behind


def test_version_names_pyro_vae_torch_and_pyro_as_run_json_records_them(capsys):
    import pyro
    import torch

    import pyro_vae

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyro-vae {pyro_vae.__version__} (torch {torch.__version__}, pyro-ppl {pyro.__version__})"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA GPU is visible: cuda is no error here")
def test_cuda_without_a_gpu_is_named_with_the_fix_for_the_command_line_and_python(tmp_path, capsys):
    from pyro_vae.runs.load import load_run

    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    assert main(["evaluate", str(run), "--k", "5", "--device", "cuda"]) == 2
    assert "device 'cuda' was asked for but no CUDA GPU is available" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r'use --device cpu or --device auto \(in a config, device: cpu; load_run takes device="cpu"\)'):
        load_run(run, device="cuda")
    assert load_run(run, device="cpu").device.type == "cpu"
