"""Paths given by the user, checked before the work whose results they will hold."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from pyro_vae.errors import ConfigError


@contextmanager
def replaced_atomically(path: Path | str, sync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into: a temporary file beside ``path``,
    renamed over it when the block ends without an error. A crash or an error inside leaves the old
    file (or none), never half of one, and the temporary file is removed.

    :param sync: flush the content to the disk before the rename (checkpoints: a power cut after
        the rename must not leave an empty file behind the new name).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomically(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`replaced_atomically`."""
    with replaced_atomically(path) as f:
        f.write(data)


def write_text_atomically(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replaced_atomically` (run.json is read back at
    every resume: a crash must not leave half of one)."""
    write_bytes_atomically(path, text.encode("utf-8"))


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
