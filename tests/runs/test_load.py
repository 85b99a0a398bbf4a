"""Loading a run: refused when its config.yaml or data changed since training; the hardware record."""

from pathlib import Path

import pytest
import torch

from pyro_vae.errors import CheckpointError
from pyro_vae.runs.load import load_run
from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config


def test_run_json_and_evaluations_name_the_kernels_and_versions_that_computed_their_numbers(tmp_path, monkeypatch):
    """The last digits of a run depend on the processor's kernels (AVX2 and AVX-512 ones round
    differently): run.json and each evaluation's JSON name the processor, torch's CPU kernel level
    and any variable that chose other kernels."""
    import json

    import pyro

    import pyro_vae
    from pyro_vae.hardware import CPU_KERNEL_VARIABLES, hardware
    from pyro_vae.runs.evaluate import evaluate_run

    for name in CPU_KERNEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    run = tmp_path / "r"
    Trainer(tiny_config(training={"epochs": 1}), run, progress=False).train()
    recorded = json.loads((run / "run.json").read_text())["hardware"]
    assert recorded == hardware(torch.device("cpu")) and recorded["cpu"] and "kernel_variables" not in recorded
    assert recorded["torch_cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # read when the result is written, as it ran
    result = evaluate_run(run, "iwae", k=3, n=5, progress=False)
    written = json.loads(Path(result["path"]).read_text())
    assert written["hardware"]["kernel_variables"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    # and the software: an evaluation may come later than the training, under other versions
    expected = {"pyro_vae": pyro_vae.__version__, "torch": torch.__version__, "pyro": pyro.__version__}
    assert written["versions"] == expected and {k: json.loads((run / "run.json").read_text())[k] for k in expected} == expected
    for estimator in ("gaps", "bdmc"):
        result = evaluate_run(run, estimator, k=3, n=3, ais_steps=2, ais_chains=2, progress=False)
        assert json.loads(Path(result["path"]).read_text())["versions"] == expected


def test_a_data_file_changed_in_place_is_noticed(tmp_path):
    """run.json records a fingerprint of each split; evaluating or resuming on other data is refused."""
    import json

    import numpy as np

    from pyro_vae.errors import DataError

    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.default_rng(0).random((40, 6)).astype(np.float32))
    cfg = tiny_config(data={"name": "npz", "path": str(path)}, training={"epochs": 1})
    Trainer(cfg, tmp_path / "r", progress=False).train()
    recorded = json.loads((tmp_path / "r" / "run.json").read_text())["data"]["fingerprint"]
    assert set(recorded) == {"train", "test"} and all(len(v) == 16 for v in recorded.values())
    load_run(tmp_path / "r")  # the same data: fine
    np.savez(path, x=np.random.default_rng(1).random((40, 6)).astype(np.float32))  # same shape, other values
    with pytest.raises(DataError, match=r"not what it was trained with \(data contents \(train\): " + recorded["train"]):
        load_run(tmp_path / "r")
    longer = tiny_config(data={"name": "npz", "path": str(path)}, training={"epochs": 2})
    with pytest.raises(CheckpointError, match=r"data contents \(test\)"):
        Trainer(longer, tmp_path / "r", progress=False).train(resume=True)
    Trainer(longer, tmp_path / "r", progress=False).train(resume=True, allow_changes=True)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["resumed_with_changes"][0]["changes"]["data contents (train)"][0] == recorded["train"]
    load_run(tmp_path / "r")  # run.json now names the new data


def test_a_config_yaml_edited_after_training_is_refused(tmp_path):
    run = tmp_path / "r"
    Trainer(tiny_config(), run, progress=False).train()
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("name: gaussian", "name: laplace"))
    with pytest.raises(CheckpointError, match=r"no longer describes the model its checkpoint holds \(model\.likelihood\.name: "
                                              r"'gaussian' in the checkpoint, 'laplace' in config\.yaml\)"):
        load_run(run)
    (run / "config.yaml").write_text(text.replace("k: 5000", "k: 7"))  # evaluation settings may change
    assert load_run(run).config.evaluation.k == 7


def test_a_metrics_line_cut_short_is_left_out_by_resume_and_plots(tmp_path, capsys):
    from pyro_vae.runs.plotting import plot_curves
    from pyro_vae.runs.records import read_metrics

    run = tmp_path / "r"
    Trainer(tiny_config(training={"epochs": 2}), run, progress=False).train()
    with open(run / "metrics.csv", "a") as f:
        f.write("3,30,15")  # a crash in the middle of writing epoch 3's row
    rows, unreadable = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and unreadable == 1
    assert plot_curves(run / "metrics.csv", tmp_path / "curves.png").exists()
    Trainer(tiny_config(training={"epochs": 3}), run, progress=False).train(resume=True)
    assert "left out 1 unreadable line" in capsys.readouterr().err
    rows, unreadable = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and unreadable == 0


def test_a_loaded_run_trains_under_a_users_own_svi_and_predicts(tmp_path):
    """The README's 'A trained run in Pyro' snippet, as written: Pyro's SVI moves the loaded
    model's parameters, and Predictive draws from the guide and the prior."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## A trained run in Pyro.*?```python\n(.*?)```", readme, re.S).group(1)
    from pyro_vae.cli import main

    assert main(["train", "tiny", "--run-dir", str(tmp_path / "runs" / "tiny"), "--no-progress", "--set", "training.epochs=1"]) == 0
    namespace: dict = {}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(code, namespace)
    finally:
        os.chdir(cwd)
    assert namespace["moved"] and namespace["posterior"]["z"].shape == (10, 100, 2)
    assert namespace["prior"]["x"].shape[:2] == (10, 100)


def test_load_run_names_a_folder_that_is_no_path():
    with pytest.raises(CheckpointError, match=r"load_run takes a run folder's path \(a str or pathlib.Path\), got 5"):
        load_run(5)  # pathlib's TypeError before
