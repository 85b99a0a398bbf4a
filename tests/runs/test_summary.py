"""`pyro-vae show`: a run's model, training and estimates in a few lines."""

import json

from pyro_vae.cli import main


def test_show_lists_a_runs_model_training_and_every_estimate_beside_it(tmp_path, capsys):
    """`pyro-vae show` reads config.yaml, metrics.csv and the eval_*.json files alone: every
    estimate with its settings and error, flagged when it scored an earlier epoch than the run has
    reached; a file it cannot read is named, not fatal."""
    run = tmp_path / "run"
    assert main(["train", "tiny", "--run-dir", str(run), "--no-progress", "--set", "training.epochs=1"]) == 0
    for args in (["--k", "5", "--n", "3"], ["--estimator", "elbo"]):
        assert main(["evaluate", str(run), "--no-progress", *args]) == 0
    assert main(["train", str(run), "--resume", "--set", "training.epochs=2", "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--k", "7", "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--estimator", "hmc", "--n", "4", "--hmc-samples", "5", "--hmc-warmup", "5", "--no-progress"]) == 0
    (run / "eval_mine.json").write_text("{not json")
    capsys.readouterr()
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    iwae_k5 = json.loads((run / "eval_iwae_k5_test_n3.json").read_text())
    hmc = json.loads((run / "eval_hmc_samples5_warmup5_test_n4.json").read_text())
    assert (f"hmc_appendix_d on test, n=4, binarize none, seed 0: log p(x) = {hmc['value']:.3f} +- {hmc['stderr']:.3f}, chains "
            f"disagree (R-hat > 1.1) at {hmc['diagnostics']['datapoints_rhat_above']} of 4 [") in out
    assert "model: prior standard_normal, likelihood gaussian(variance=learned" in out
    assert "objective trace_meanfield(num_particles=1" in out and "optimizer adam(lr=0.01" in out
    assert "trained: to epoch 2, 1000 samples, test ELBO " in out
    hardware = json.loads((run / "run.json").read_text())["hardware"]
    assert f"nats per datapoint, on cpu ({hardware['cpu']}, {hardware['torch_cpu_kernels']} kernels)\n" in out
    assert (f"iwae on test, n=3, binarize none, seed 0: log p(x) = {iwae_k5['value']:.3f} +- {iwae_k5['stderr']:.3f} [k=5]  "
            "(eval_iwae_k5_test_n3.json, of the model at epoch 1)") in out
    assert "elbo on test, n=100" in out and "(eval_elbo_test.json, of the model at epoch 1)" in out
    assert "[k=7]  (eval_iwae_k7_test.json)\n" in out  # the current model: no flag
    assert "not read (not an evaluation pyro-vae wrote, or damaged): eval_mine.json" in out
    # a run.json from before the hardware record: the line ends at the ELBO
    info = json.loads((run / "run.json").read_text())
    del info["hardware"]
    (run / "run.json").write_text(json.dumps(info))
    assert main(["show", str(run)]) == 0
    assert "nats per datapoint\n" in capsys.readouterr().out
    assert main(["show", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder (no config.yaml)" in capsys.readouterr().err
    # several at once (`runs/*`): each summarized, a folder that holds no run named, exit status 2
    assert main(["show", str(run), str(tmp_path / "nothing"), str(run)]) == 2
    captured = capsys.readouterr()
    assert captured.out.count(f"run {run} (tiny)") == 2 and "\n\nrun " in captured.out
    assert captured.err.count("is not a run folder") == 1


def test_show_of_a_folder_of_runs_shows_each_run_it_holds(tmp_path, capsys):
    runs = tmp_path / "runs"
    for name in ("b", "a"):
        assert main(["train", "tiny", "--run-dir", str(runs / name), "--no-progress", "--set", "training.epochs=1"]) == 0
    (runs / "notes").mkdir()  # a folder that is no run: left out
    capsys.readouterr()
    assert main(["show", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.index(f"run {runs / 'a'} (tiny)") < out.index(f"run {runs / 'b'} (tiny)") and "notes" not in out
    assert main(["show", str(runs / "notes")]) == 2  # an empty folder is still no run
    assert "is not a run folder (no config.yaml)" in capsys.readouterr().err
