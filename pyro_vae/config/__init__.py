"""The run config: one validated file that fully describes a run, saved beside its results.

``load`` reads a config (a file, a run folder or a shipped config's name), applies ``--set``
overrides and validates it (``as_run_config`` takes a dict as well); ``save`` writes it with every default spelled out. The schema is in
:mod:`~pyro_vae.config.schema`, file reading in :mod:`~pyro_vae.config.files`, overrides in
:mod:`~pyro_vae.config.overrides`, and building a run's objects from it in
:mod:`~pyro_vae.config.build`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from pyro_vae.config.files import SHIPPED_CONFIGS, config_path, parse_yaml, read_config_file, shipped_configs, syntax_error_text
from pyro_vae.config.overrides import apply_overrides
from pyro_vae.config.schema import (
    RESUMABLE_SETTINGS,
    Component,
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    TrainingConfig,
    changed_settings,
    from_dict,
    is_device_name,
)
from pyro_vae.files import write_text_atomically


def load(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a config: a file, a run folder or a shipped config's name."""
    path = config_path(path)
    data = apply_overrides(read_config_file(path), overrides)
    return from_dict(data, source=f"{path} with --set {' '.join(overrides)}" if overrides else str(path))


def as_run_config(config: RunConfig | str | Path | Mapping[str, Any]) -> RunConfig:
    """A validated config from what a Python caller has at hand: a ``RunConfig``, what
    :func:`load` reads (a file, a run folder or a shipped config's name), or a dict of sections."""
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, (str, Path)):
        return load(config)
    if isinstance(config, Mapping):
        return from_dict(dict(config), source="(the dict given)")
    raise TypeError(f"a config is a RunConfig, a config file's path or name, or a dict of its sections; got {type(config).__name__}")


def save(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, every default filled in: the config's own and each
    component's options that its builder defaults (a VampPrior's ``components``, Adam's ``betas``),
    so the file describes the run in full even if a later version changes a default."""
    write_text_atomically(path, yaml.safe_dump(config.to_dict_with_option_defaults(), sort_keys=False))


def dumps(config: RunConfig) -> str:
    """The config as JSON text (the user's values, without the builders' defaults)."""
    return json.dumps(config.to_dict(), indent=2)


__all__ = [
    "RESUMABLE_SETTINGS", "SHIPPED_CONFIGS", "Component", "DataConfig", "EvaluationConfig", "ModelConfig", "ObjectiveConfig",
    "OptimizerConfig", "RunConfig", "ScheduleConfig", "TrainingConfig", "apply_overrides", "as_run_config", "changed_settings", "config_path",
    "dumps", "from_dict", "is_device_name", "load", "parse_yaml", "read_config_file", "save", "shipped_configs",
    "syntax_error_text",
]
