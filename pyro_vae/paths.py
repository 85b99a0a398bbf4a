"""Paths given by the user, checked before the work whose results they will hold."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


def write_text_atomically(path: Path | str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: a crash leaves
    the old file or the new one, never half of one (run.json is read back at every resume)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_no_file_in_the_way(folder: Path, what: str, given: Path) -> None:
    in_the_way = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if in_the_way is not None and not in_the_way.is_dir():
        raise ConfigError(f"{what} {given}: {in_the_way} is a file, not a folder; choose another path.")


def folder_path(path: Path | str, what: str) -> Path:
    """``path`` as a folder that exists or can be created: a ConfigError naming ``what`` (e.g.
    ``--run-dir``) if it, or a folder above it, is a file."""
    path = Path(path).expanduser()
    _check_no_file_in_the_way(path, what, path)
    return path


def prepared_output(path: Path | str, what: str) -> Path:
    """``path`` as a file to be written, its folder created if missing; a ConfigError naming
    ``what`` (e.g. ``--out``) if that cannot be. Called before an evaluation or a drawing starts,
    so that minutes of work are not lost to a mistyped path at the end."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file path (for example {path / 'result.json'}).")
    folder = path.parent
    _check_no_file_in_the_way(folder, what, path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {path}: its folder {folder} cannot be created ({e.strerror}); choose another path.") from None
    return path
