"""``--set KEY=VALUE`` overrides of a config, and the swap of one component for another."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from pyro_vae.components.registry import import_modules
from pyro_vae.config.files import parse_yaml, syntax_error_text
from pyro_vae.config.schema import COMPONENT_SECTIONS, NO_DEFAULT, RunConfig, as_config_value, registry_of, section_at
from pyro_vae.errors import ConfigError, warn


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
    entries = registry_of(path)
    if new_name not in entries:
        return []  # validation names the unknown component, with the valid ones
    own_fields = set(COMPONENT_SECTIONS[path][1].model_fields)
    old_name = section.get("name")
    old_defaults = entries.options(old_name) if isinstance(old_name, str) and old_name in entries else {}
    new_defaults = entries.options(new_name)
    dropped = []
    for key in list(section):
        if key in own_fields or path + (key,) in set_here:
            continue
        if as_config_value(old_defaults.get(key, NO_DEFAULT)) == section[key]:
            # The old component's default, as a saved config.yaml spells out every default: no
            # choice of the user's, so the new component's own default applies (nothing to warn of).
            if as_config_value(new_defaults.get(key, NO_DEFAULT)) != section[key]:
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
            if k not in node and path in COMPONENT_SECTIONS:
                # start from the default component, as the config without this override had it
                defaults = defaults if defaults is not None else RunConfig().to_dict()
                node[k] = copy.deepcopy(section_at(defaults, path))
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {k!r} is a value, not a section.")
            node = child
        parent = tuple(keys[:-1])
        if keys[-1] == "name" and parent in COMPONENT_SECTIONS and isinstance(value, str) and value != node.get("name"):
            if isinstance(data.get("imports"), list):  # the new component may be one of the user's own
                import_modules(data["imports"])
            dropped = _swap_component(node, parent, value, set_here)
            if dropped:
                warn(
                    f"pyro-vae: --set {key}={value}: dropped {', '.join(dropped)}, option(s) of "
                    f"{node.get('name', 'the default')!r} that {value!r} does not take")
        node[keys[-1]] = value
        set_here.update(_key_paths(tuple(keys), value))
    return data
