"""Output paths given by the user, checked before the work whose result they will hold."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def prepared_output(path: Path | str, what: str) -> Path:
    """``path`` with its folder created if missing; a ConfigError naming ``what`` (e.g. ``--out``)
    if the folder cannot exist there or ``path`` is itself a folder. Called before an evaluation
    or a drawing starts, so that minutes of work are not lost to a mistyped path at the end."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file path (for example {path / 'result.json'}).")
    blocking = next((a for a in path.parents if a.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ConfigError(f"{what} {path}: {blocking} is a file, not a folder; choose another path.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {path}: its folder {path.parent} cannot be created ({e.strerror}); choose another path.") from None
    return path
