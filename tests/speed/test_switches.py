"""The speed paths' environment switches and glibc's kept memory."""

import pytest

from pyro_vae.errors import ConfigError
from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config


def test_run_json_records_the_speed_switches(tmp_path, monkeypatch):
    import json

    from pyro_vae.mcmc import potentials
    from pyro_vae.speed import allocator, fused_linear

    for enabled in (True, False):
        monkeypatch.setattr(fused_linear.switched_on, "value", enabled)
        monkeypatch.setattr(potentials.switched_on, "value", not enabled)
        run = tmp_path / str(enabled)
        Trainer(tiny_config(training={"epochs": 1}), run, progress=False).train()
        info = json.loads((run / "run.json").read_text())
        assert info["fused_linear"] is (enabled and fused_linear.available())
        assert info["compile_potentials"] is (not enabled)
        assert info["keep_freed_memory"] == allocator.state()


@pytest.mark.parametrize("variable", ["PYRO_VAE_FUSED_LINEAR", "PYRO_VAE_COMPILE_POTENTIALS", "PYRO_VAE_KEEP_FREED_MEMORY"])
def test_speed_switches_in_the_environment_are_checked(tmp_path, monkeypatch, capsys, variable):
    from pyro_vae.cli import main
    from pyro_vae.mcmc import potentials
    from pyro_vae.speed import allocator, fused_linear
    from pyro_vae.speed.switches import env_switch

    module = {"PYRO_VAE_FUSED_LINEAR": fused_linear, "PYRO_VAE_COMPILE_POTENTIALS": potentials,
              "PYRO_VAE_KEEP_FREED_MEMORY": allocator}[variable]
    monkeypatch.delenv(variable, raising=False)
    assert env_switch(variable, on="a", off="b") is True  # on by default
    for value, expected in (("1", True), ("0", False)):
        monkeypatch.setenv(variable, value)
        assert env_switch(variable, on="a", off="b") is expected
    monkeypatch.setenv(variable, "yes")
    with pytest.raises(ConfigError, match=f"{variable}='yes'.*use 1 \\(a, the default\\) or 0 \\(b\\)"):
        env_switch(variable, on="a", off="b")
    # read at first use, so that the CLI reports a bad value as one line
    monkeypatch.setattr(module.switched_on, "value", None)
    config = tmp_path / "c.yaml"
    config.write_text("name: t\ndata: {name: synthetic, n_train: 20, n_test: 10}\nmodel: {z_dim: 2}\ntraining: {epochs: 1, batch_size: 10}\n")
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r")]) == 2
    assert f"{variable}='yes'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # no work done
    monkeypatch.setenv(variable, "0")
    monkeypatch.setattr(module.switched_on, "value", None)
    assert module.switched_on() is False and module.switched_on.value is False


def test_keep_freed_memory_applies_once_and_leaves_user_settings_alone(monkeypatch):
    """glibc's thresholds are raised where the switch is on and the user has not tuned malloc
    through the environment; the outcome is remembered for the process (and recorded in run.json)."""
    import ctypes
    import sys

    from pyro_vae.speed import allocator

    calls = []
    monkeypatch.setattr(allocator, "_mallopt_thresholds", lambda size: calls.append(size) or True)
    for env, switch, expected in (({}, True, "kept"), ({}, False, "off"), ({"MALLOC_TRIM_THRESHOLD_": "1"}, True, "user settings"),
                                  ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}, True, "user settings")):
        for name in ("MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(allocator.switched_on, "value", switch)
        monkeypatch.setattr(allocator, "_state", None)
        assert allocator.keep_freed_memory() == expected and allocator.state() == expected
        assert allocator.keep_freed_memory() == expected  # once per process
    assert calls == [allocator.THRESHOLD_BYTES]
    monkeypatch.undo()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").gnu_get_libc_version
        except (OSError, AttributeError):
            return
        assert allocator._mallopt_thresholds(allocator.THRESHOLD_BYTES) is True  # glibc takes both settings


def test_the_cli_keeps_freed_memory(tmp_path, monkeypatch):
    from pyro_vae.cli import main
    from pyro_vae.speed import allocator

    called = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: called.append(True) or "kept")
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a data root that is a file: the command starts, then fails with a message
    assert main(["data", "fetch", "mnist", "--root", str(blocker)]) == 2
    assert called == [True]
