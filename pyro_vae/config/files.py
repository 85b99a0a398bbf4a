"""Reading config files: YAML (``.yaml``/``.yml``) or TOML (``.toml``), and the configs that
ship with the package (``pyro-vae configs``), found by name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

from pyro_vae.errors import ConfigError


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


def syntax_error_text(error: Exception) -> str:
    """A parser's error in one line: PyYAML's spans several, with a caret drawn under the spot."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())


def read_config_file(path: Path) -> Dict[str, Any]:
    """The sections of a YAML or TOML config file, unvalidated; a ConfigError for a file that is
    missing, unreadable, not text, not valid YAML/TOML or not a mapping."""
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not text (not UTF-8); give a YAML or TOML config file.") from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({e.strerror or e}).") from None
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
        # The defaults are the paper's model on MNIST, whose Bernoulli likelihood needs the grey
        # levels binarized: the one setting that makes them a run.
        defaults = "a [data] table with `binarize = \"dynamic\"`" if path.suffix == ".toml" else "`{data: {binarize: dynamic}}`"
        raise ConfigError(f"config file {str(path)!r} holds no settings; give at least the sections that differ from the "
                          f"defaults (`pyro-vae configs` lists the shipped ones; aevb_mnist is the paper's run), or {defaults} "
                          "for the defaults (the paper's model on dynamically binarized MNIST).")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level.")
    return data


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "shipped"


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
        if path.suffix not in (".yaml", ".yml", ".toml", ".json") and (path.parent / "config.yaml").is_file():
            raise ConfigError(f"{str(path)!r} is a file of the run folder {str(path.parent)!r}; pass the folder itself "
                              "(its config.yaml is read).")
        return path
    shipped = SHIPPED_CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(shipped_configs())
    raise ConfigError(f"config file {str(name_or_path)!r} does not exist and names no shipped config ({names}); "
                      "give a config file's path, a run folder, or one of those names.")
