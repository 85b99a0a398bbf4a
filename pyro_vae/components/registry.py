"""One registry per kind of component, chosen by name in the config.

Every component that a config names (priors, likelihoods, guides, networks, objectives, optimizers,
data sets) is registered under a string name together with its builder, by the module that defines
it (``@PRIORS.register("vamp")``); this module knows no component. Builders take keyword arguments
only; those arguments are exactly the options the config may give for that entry, so the config is
validated against the builder's signature and an unknown name or option is an error that lists the
valid ones. The packages that register the built-in entries (:mod:`pyro_vae.components`,
:mod:`pyro_vae.objectives`, :mod:`pyro_vae.optimizers`, :mod:`pyro_vae.data`) are imported by
:mod:`pyro_vae.config.schema`, so a loaded config sees them all.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import os
import re
import reprlib
import sys
import typing
from typing import Any, Callable, Dict, Generic, List, Literal, Optional, TypeVar, Union

from pyro_vae.errors import ConfigError, PyroVAEError
from pyro_vae.user_numbers import as_whole_number

T = TypeVar("T", bound=Callable[..., Any])


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def import_modules(names: List[str]) -> None:
    """Import the modules a config names under ``imports``: the user's own components register
    themselves when their module is imported, so the config's names resolve to them.

    Each is a module name as ``import`` takes it, found on the Python path or in the current folder
    (which the ``pyro-vae`` command, unlike ``python -m``, does not put on the path). A module is
    imported once per process, so naming it in several configs registers its components once.
    """
    for name in names:
        if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name) or name.endswith(".py"):
            stem = os.path.splitext(os.path.basename(str(name)))[0]
            if str(name).endswith(".py") and _MODULE_NAME.fullmatch(stem):
                raise ConfigError(f"imports: {name!r} is a file; name its module instead, {stem!r}, and run from the "
                                  "folder that holds it (or put that folder on PYTHONPATH).")
            raise ConfigError(f"imports: {name!r} is not a module name; write it as after `import`, e.g. "
                              "'my_priors' for my_priors.py in the current folder.")
        if name in sys.modules:
            continue
        cwd = os.getcwd()
        added = cwd not in sys.path and "" not in sys.path
        if added:
            sys.path.insert(0, cwd)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
                raise ConfigError(
                    f"imports: no module {name!r} on the Python path or in the current folder ({cwd}); run from "
                    "the folder that holds it, add its folder to PYTHONPATH, or install its package."
                ) from None
            raise ConfigError(f"imports: importing {name!r} failed: {type(e).__name__}: {e}") from e
        except Exception as e:  # the module's own code failed: say which module, and how
            raise ConfigError(f"imports: importing {name!r} failed: {type(e).__name__}: {e}") from e
        finally:
            if added:
                sys.path.remove(cwd)


def _all_finite(value: Any) -> bool:
    """False if ``value`` is, or a list/tuple in it holds, an infinite or NaN float. No config option
    means anything by those (a learning rate or scale of ``.inf`` only turns the loss into NaN later)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value (as YAML or TOML gives it) fits a builder's annotation. The types
    builders use: float (an int will do), int, bool, str, Literal, Optional, List and Tuple (a
    list will do); any other annotation is left to the builder's own checks."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    if hint is type(None):
        return value is None
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    return True


def _whole_numbers_where_counted(value: Any, hint: Any) -> Any:
    """``value`` with each float that writes a whole number (``5e3``) made an int wherever ``hint``
    asks for one (``int``, ``List[int]``, ``Optional[int]``, ...); a value that fits as it is stays."""
    if hint is int:
        return as_whole_number(value)
    if _fits(value, hint):
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        for arg in args:
            converted = _whole_numbers_where_counted(value, arg)
            if _fits(converted, arg):
                return converted
    elif origin is list and isinstance(value, (list, tuple)):
        return [_whole_numbers_where_counted(v, args[0]) for v in value]
    elif origin is tuple and isinstance(value, (list, tuple)) and len(value) == len(args):
        return [_whole_numbers_where_counted(v, a) for v, a in zip(value, args)]
    return value


def _type_hints(builder: Callable[..., Any]) -> Dict[str, Any]:
    """The builder's annotations, resolved; none where they cannot be (a name imported only for type
    checkers): its options then go unchecked for type, as before, rather than failing to load."""
    try:
        return typing.get_type_hints(builder)
    except Exception:  # NameError, TypeError: whatever an unresolvable annotation raises
        return {}


_NOUNS = {float: "number", int: "whole number", bool: "true or false value", str: "string"}


def _describe(hint: Any) -> str:
    """A builder's annotation in a config's words: ``Tuple[float, float]`` is "a list of 2 numbers"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return "true or false"
    if hint in _NOUNS:
        return "a " + _NOUNS[hint]
    if hint is type(None):
        return "null"
    if origin is Union:
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple) and args and all(a == args[0] and a in _NOUNS for a in args):
        count = "" if origin is list else f"{len(args)} "
        return f"a list of {count}{_NOUNS[args[0]]}s"
    return str(hint)


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


class Registry(Generic[T]):
    """A name -> builder mapping for one kind of component (e.g. ``"prior"``).

    :param kind: what the entries are, used in error messages.
    :param context_args: keyword arguments that the library supplies when building (for example the
        latent size); they are not config options and a config may not set them.
    """

    def __init__(self, kind: str, context_args: tuple = ()) -> None:
        self.kind = kind
        self.context_args = frozenset(context_args)
        self._entries: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(builder: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is registered twice; register yours under another name")
            self._entries[name] = builder
            return builder

        return decorator

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            hint = difflib.get_close_matches(name, self.names(), n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{did_you_mean} Valid {self.kind} names: "
                f"{', '.join(self.names())}. {_article(self.kind).capitalize()} {self.kind} of your own: name the module that registers "
                "it under `imports:` in the config (docs/guide.md, 'Adding a component')."
            )
        return self._entries[name]

    def options(self, name: str) -> Dict[str, Any]:
        """The config options of an entry with their defaults (``inspect.Parameter.empty`` if required)."""
        sig = inspect.signature(self.get(name))
        return {
            k: p.default
            for k, p in sig.parameters.items()
            if k not in self.context_args and p.kind is p.KEYWORD_ONLY
        }

    def value_problem(self, name: str, key: str, value: Any) -> Optional[str]:
        """What is wrong with ``value`` for option ``key`` of entry ``name`` (its type, its
        finiteness), or None."""
        hint = _type_hints(self.get(name)).get(key)
        if hint is not None and not _fits(value, hint):
            return f"{self.kind} {name!r}: option {key!r} must be {_describe(hint)}, got {value!r}."
        if not _all_finite(value):
            return (f"{self.kind} {name!r}: option {key!r} must hold finite numbers, got {value!r} "
                    "(for 'no limit', write a large number such as 1e30).")
        return None

    def _with_whole_numbers(self, name: str, options: Dict[str, Any]) -> Dict[str, Any]:
        """``options`` with every count written as a whole float (``num_particles: 5e3``) made an int,
        as entry ``name``'s builder annotates it (:mod:`pyro_vae.user_numbers`)."""
        hints = _type_hints(self.get(name))
        return {key: _whole_numbers_where_counted(value, hints[key]) if key in hints else value for key, value in options.items()}

    def takes(self, name: str, key: str, value: Any) -> bool:
        """Whether entry ``name`` takes option ``key`` with this value (its name, type and finiteness)."""
        return key in self.options(name) and self.value_problem(name, key, self._with_whole_numbers(name, {key: value})[key]) is None

    def check_options(self, name: str, options: Dict[str, Any]) -> Dict[str, Any]:
        """``options`` as entry ``name``'s builder takes them (counts written ``5e3`` as ints); a
        :class:`ConfigError` if they are not valid keywords of it, of the types it annotates."""
        options = self._with_whole_numbers(name, options)
        valid = self.options(name)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(
                f"{self.kind} {name!r} has no option(s) {', '.join(map(repr, unknown))}. "
                f"Its options are: {', '.join(valid) or '(none)'}."
            )
        missing = [k for k, d in valid.items() if d is inspect.Parameter.empty and k not in options]
        if missing:
            raise ConfigError(f"{self.kind} {name!r} needs option(s): {', '.join(missing)}.")
        for key, value in options.items():
            problem = self.value_problem(name, key, value)
            if problem:
                raise ConfigError(problem)
        return options

    def build(self, name: str, options: Dict[str, Any], returns: type = object, **context: Any) -> Any:
        """Entry ``name`` built with ``options`` and the ``context`` arguments; ``returns`` is the type
        its builder must return (a component of one's own may return something else)."""
        options = self.check_options(name, options)
        builder = self.get(name)
        try:
            built = builder(**context, **options)
        except (TypeError, ValueError) as e:
            if isinstance(e, PyroVAEError):  # already says what is wrong (a DataError of a loader, ...)
                raise
            raise ConfigError(f"{self.kind} {name!r} with options {options}: {e}") from e
        if not isinstance(built, returns):
            raise ConfigError(f"{self.kind} {name!r}: its builder returned {reprlib.repr(built)}; {_article(self.kind)} {self.kind}'s "
                              f"builder returns a {returns.__module__}.{returns.__qualname__} (docs/guide.md, 'Adding a component')")
        return built


PRIORS: Registry = Registry("prior", context_args=("z_dim", "x_dim"))
LIKELIHOODS: Registry = Registry("likelihood", context_args=("x_dim",))
GUIDES: Registry = Registry("guide", context_args=("z_dim",))
NETWORKS: Registry = Registry("network", context_args=("in_dim", "out_dim", "x_shape", "role"))
OBJECTIVES: Registry = Registry("objective", context_args=())
OPTIMIZERS: Registry = Registry("optimizer", context_args=("params",))
# A data set that generates its points (``synthetic``) may also take ``n_train``/``n_test``: the
# data section's sizes (``load_dataset`` passes them where the builder has them), not options.
DATASETS: Registry = Registry("dataset", context_args=("root", "download", "n_train", "n_test"))
