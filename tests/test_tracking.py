"""Tracking: the callback API and the TensorBoard logger (scalars per epoch, sample and
reconstruction grids for image data, every log p(x) estimate), with training unchanged by it."""

import numpy as np
import pytest

from pyro_vae.cli import main
from pyro_vae.runs.evaluate import evaluate_run
from pyro_vae.runs.records import read_metrics
from pyro_vae.tracking import Callback
from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_tensorboard_logs_scalars_images_and_estimates_and_leaves_training_as_it_was(tmp_path):
    pytest.importorskip("tensorboard")
    images = (np.random.default_rng(0).random((60, 8, 8)) < 0.3).astype(np.float32)
    np.savez(tmp_path / "img.npz", x=images)
    common = ["--no-progress", "--set", "training.epochs=2", "--set", f"data={{name: npz, path: {tmp_path / 'img.npz'}}}",
              "--set", "model.likelihood.name=bernoulli", "--set", "training.batch_size=20"]
    assert main(["train", "tiny", "--run-dir", str(tmp_path / "plain"), *common]) == 0
    assert main(["train", "tiny", "--run-dir", str(tmp_path / "logged"), *common, "--set", "logging.tensorboard=true"]) == 0
    assert read_metrics(tmp_path / "plain" / "metrics.csv")[0] == [
        dict(r, epoch_seconds=p["epoch_seconds"], wall_seconds=p["wall_seconds"])
        for r, p in zip(read_metrics(tmp_path / "logged" / "metrics.csv")[0], read_metrics(tmp_path / "plain" / "metrics.csv")[0])]
    evaluate_run(tmp_path / "logged", "iwae", k=5, progress=False)
    events = _events(tmp_path / "logged" / "tensorboard")
    tags = events.Tags()
    assert {"train/test_elbo", "train/train_objective", "train/lr", "log_px/iwae_test"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/test_elbo")] == [54, 108]  # samples seen (54 training points)
    assert {"samples", "reconstructions (test image, then its reconstruction)"} <= set(tags["images"])


def test_a_callback_of_ones_own_hears_every_epoch_and_evaluation(tmp_path):
    heard = []

    class Recorder(Callback):
        def on_epoch_end(self, trainer, row):
            heard.append(("epoch", row["epoch"], row["samples_seen"]))

        def on_evaluation_end(self, result):
            heard.append(("evaluation", result["estimator"]))

    trainer = Trainer(tiny_config(training={"epochs": 2}), tmp_path / "r", progress=False, callbacks=[Recorder()])
    trainer.train()
    evaluate_run(tmp_path / "r", "elbo", progress=False, callbacks=[Recorder()])
    assert heard == [("epoch", 1, 60), ("epoch", 2, 120), ("evaluation", "elbo")]


def test_the_tensorboard_flag_names_its_folder(tmp_path):
    pytest.importorskip("tensorboard")
    assert main(["train", "tiny", "--run-dir", str(tmp_path / "r"), "--no-progress", "--set", "training.epochs=1",
                 "--tensorboard", str(tmp_path / "tb")]) == 0
    assert "train/test_elbo" in _events(tmp_path / "tb").Tags()["scalars"]


def test_a_tensorboard_folder_that_is_a_file_is_named_before_the_run_starts(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    assert main(["train", "tiny", "--run-dir", str(tmp_path / "r"), "--no-progress", "--tensorboard", str(blocker / "tb")]) == 2
    assert f"the TensorBoard folder (logging.tensorboard, --tensorboard) {blocker / 'tb'}: {blocker} is a file" in capsys.readouterr().err
    assert blocker.read_text() == "mine" and not (tmp_path / "r").exists()
