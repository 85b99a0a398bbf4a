"""The run config: one validated file that fully describes a run, saved beside its results.

``load`` reads a config (a file, a run folder, a shipped config's name or a dict of sections),
applies ``--set`` overrides and validates it; ``save`` writes it with every default spelled out.
The schema is in :mod:`~pyro_vae.config.schema`, file reading in :mod:`~pyro_vae.config.files`,
overrides in :mod:`~pyro_vae.config.overrides`, and building a run's objects from it in
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


def load(config: RunConfig | str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a config: a file, a run folder, a shipped config's name, a dict
    of its sections (as the file would hold them) or a ``RunConfig``."""
    if isinstance(config, RunConfig):
        if not overrides:
            return config
        data, source = config.to_dict(), "(the RunConfig given)"
    elif isinstance(config, Mapping):
        data, source = dict(config), "(the dict given)"
    elif isinstance(config, (str, Path)):
        path = config_path(config)
        data, source = read_config_file(path), str(path)
    else:
        raise TypeError("a config is a RunConfig, a config file's path or name, a run folder, or a dict of its sections; "
                        f"got {type(config).__name__}")
    data = apply_overrides(data, overrides)
    return from_dict(data, source=f"{source} with --set {' '.join(overrides)}" if overrides else source)


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
    "OptimizerConfig", "RunConfig", "ScheduleConfig", "TrainingConfig", "apply_overrides", "changed_settings", "config_path",
    "dumps", "from_dict", "is_device_name", "load", "parse_yaml", "read_config_file", "save", "shipped_configs",
    "syntax_error_text",
]
