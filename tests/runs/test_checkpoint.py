"""Checkpoints: written atomically, read without unpickling code, refused when they do not fit."""

import pytest
import torch

from pyro_vae.errors import CheckpointError
from pyro_vae.runs.checkpoint import load_checkpoint, save_checkpoint
from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config


def test_checkpoint_is_atomic_and_refuses_pickled_objects(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = {"vae": {"w": torch.ones(2)}, "optimizer": {}, "epoch": 1, "step": 3, "samples_seen": 60, "wall_seconds": 0.5,
             "torch_rng": torch.get_rng_state(), "shuffle_rng": torch.Generator().get_state()}
    save_checkpoint(state, path)
    assert not list(tmp_path.glob("*.tmp"))
    assert torch.equal(load_checkpoint(path)["vae"]["w"], torch.ones(2))
    save_checkpoint({**state, "epoch": "1", "config": []}, path)  # damaged: named, not a traceback later
    with pytest.raises(CheckpointError, match="damaged: epoch, config missing, negative or of the wrong type"):
        load_checkpoint(path)
    save_checkpoint({**state, "epoch": -5}, path)
    with pytest.raises(CheckpointError, match="damaged: epoch missing, negative or of the wrong type"):
        load_checkpoint(path)

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format_version": 1, "evil": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"holds a pickled object \((builtins\.)?print\), refused for safety") as refused:
        load_checkpoint(path)
    # one line, without torch's advice to load with weights_only=False (which would run the payload)
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"cannot read .*corrupt or not a torch checkpoint\); retrain") as garbage:
        load_checkpoint(path)
    assert "\n" not in str(garbage.value)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_checkpoint_from_other_model_is_rejected(tmp_path):
    Trainer(tiny_config(), tmp_path / "r", progress=False).train()
    other = Trainer(tiny_config(model={"z_dim": 3}), tmp_path / "r", progress=False)
    with pytest.raises(CheckpointError, match="model.z_dim: 2 -> 3"):
        other.resume()
    with pytest.raises(CheckpointError, match="does not fit this config's model"):
        other.resume(allow_changes=True)  # allowed, but the weights cannot be loaded into this model


def test_damaged_random_states_in_a_checkpoint_are_a_clear_error(tmp_path):
    run = tmp_path / "r"
    Trainer(tiny_config(), run, progress=False).train()
    state = load_checkpoint(run / "checkpoint.pt")
    save_checkpoint({**state, "torch_rng": torch.zeros(5, dtype=torch.uint8)}, run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="random-number states are damaged"):
        Trainer(tiny_config(training={"epochs": 2}), run, progress=False).train(resume=True)


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    state = {"vae": {}, "optimizer": {}, "epoch": 1, "step": 1, "samples_seen": 1, "wall_seconds": 0.1,
             "torch_rng": torch.get_rng_state(), "shuffle_rng": torch.Generator().get_state()}
    save_checkpoint(state, path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*the previous checkpoint is kept"):
        save_checkpoint({**state, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and not (tmp_path / "checkpoint.pt.tmp").exists()


def test_run_files_are_replaced_whole(tmp_path, monkeypatch):
    """run.json (read back at every resume) is written beside and renamed over: a failed write
    leaves the old file and no partial one."""
    from pyro_vae.files import write_text_atomically

    path = tmp_path / "run.json"
    write_text_atomically(path, '{"a": 1}')
    original_replace = __import__("os").replace

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError):
        write_text_atomically(path, '{"a": 2}')
    monkeypatch.setattr("os.replace", original_replace)
    assert path.read_text() == '{"a": 1}' and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_an_error_while_writing_leaves_the_old_file_whole(tmp_path):
    """Every file pyro-vae replaces (checkpoints, data caches, sample arrays, run files) goes
    through one helper: an error halfway through the new content leaves the old file as it was."""
    from pyro_vae.files import replaced_atomically

    path = tmp_path / "cache.npz"
    path.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="halfway"):
        with replaced_atomically(path) as f:
            f.write(b"new cont")
            raise RuntimeError("halfway")
    assert path.read_bytes() == b"old content" and [p.name for p in tmp_path.iterdir()] == ["cache.npz"]
    with replaced_atomically(path, sync=True) as f:
        f.write(b"new content")
    assert path.read_bytes() == b"new content" and [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_a_replaced_file_gets_the_mode_open_would_give_it(tmp_path):
    """The temporary file (private, as mkstemp makes it) takes 0o666 less the process's umask, read
    without setting it (another thread creating a file meanwhile would get that setting)."""
    import os
    import stat

    from pyro_vae.files import current_umask, replaced_atomically

    saved = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        with replaced_atomically(tmp_path / "run.json") as f:
            f.write(b"{}")
        assert stat.S_IMODE((tmp_path / "run.json").stat().st_mode) == 0o640
    finally:
        os.umask(saved)
