"""Files a run writes: paths checked before the work whose results they will hold, whole-file
replacement, and locks that keep two processes from writing one run folder or data cache."""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from pyro_vae.errors import ConfigError, PyroVAEError

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no advisory locks; one process per folder is then the user's care
    fcntl = None  # type: ignore[assignment]


class BusyError(PyroVAEError):
    """Another process holds the lock of a run folder."""


def current_umask() -> int:
    """The process's file-creation mask, read without changing it where Linux shows it
    (``/proc/self/status``, kernel 4.7+): ``os.umask`` can only read it by setting it, and for
    that moment a file another thread creates (TensorBoard's writer, say) would get mode 0o666."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A temporary file of its own beside ``path`` (so the rename is atomic, and two processes
    writing the same file never share one), renamed over ``path`` when the block ends without an
    error, with the mode open() would give it; removed in any case."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def replaced_atomically(path: Path | str, sync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into: a temporary file beside ``path``,
    renamed over it when the block ends without an error. A crash or an error inside leaves the old
    file (or none), never half of one, and the temporary file is removed; of two processes writing
    the same file, the last complete one wins.

    :param sync: flush the content to the disk before the rename (checkpoints: a power cut after
        the rename must not leave an empty file behind the new name).
    """
    with _temporary_beside(Path(path)) as tmp, open(tmp, "wb") as f:
        yield f
        if sync:
            f.flush()
            os.fsync(f.fileno())


def write_bytes_atomically(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`replaced_atomically`."""
    with replaced_atomically(path) as f:
        f.write(data)


def write_text_atomically(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replaced_atomically` (run.json is read back at
    every resume: a crash must not leave half of one)."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_atomically_with(path: Path | str, write: Callable[[Path], Any]) -> None:
    """``write(temporary_path)``, for writers that take a path (ArviZ's ``to_netcdf``), renamed
    over ``path`` as :func:`replaced_atomically` does for a file object."""
    with _temporary_beside(Path(path)) as tmp:
        write(tmp)


def _check_no_file_in_the_way(folder: Path, what: str, given: Path, fix: str = "choose another path") -> None:
    in_the_way = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if in_the_way is not None and not in_the_way.is_dir():
        raise ConfigError(f"{what} {given}: {in_the_way} is a file, not a folder; {fix}.")


def folder_path(path: Path | str, what: str, fix: str = "choose another path") -> Path:
    """``path`` as a folder that exists or can be created: a ConfigError naming ``what`` (e.g.
    ``--run-dir``) and ``fix`` if it, or a folder above it, is a file, or if it is no path at all."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a folder path (a str or pathlib.Path), got {path!r}")
    if str(path) == "":  # Path("") is the current folder: not what an empty setting means
        raise ConfigError(f"{what} is empty; give a folder path")
    path = Path(path).expanduser()
    _check_no_file_in_the_way(path, what, path, fix)
    return path


def prepared_output(path: Path | str, what: str) -> Path:
    """``path``, named by the user, as a new file to be written, its folder created if missing; a
    ConfigError naming ``what`` (e.g. ``--out``) if that cannot be, or if a file is there already:
    a path the user names is never replaced (in a run folder, pyro-vae replaces its own files).
    Called before an evaluation or a drawing starts, so that minutes of work are not lost to a
    mistyped path at the end."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file path (for example {path / 'result.json'}).")
    if path.exists() or path.is_symlink():
        raise ConfigError(f"{what} {path} exists already, and pyro-vae does not replace a file at a path you name; "
                          "move or delete it, or choose another path.")
    folder = path.parent
    _check_no_file_in_the_way(folder, what, path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {path}: its folder {folder} cannot be created ({e.strerror}); choose another path.") from None
    return path


@contextmanager
def exclusive_lock(folder: Path | str, what: str, wait: bool) -> Iterator[None]:
    """Hold ``folder/.lock`` (an advisory ``flock``, released when the process ends, however it
    ends) for the block. ``wait``: wait for another holder (a data cache being built: then read
    what it wrote); otherwise a second holder gets a :class:`BusyError` naming ``what``. A folder
    where no lock file can be made (read-only) is not locked: nothing is written there either; a
    file where the folder should be is a ConfigError naming it."""
    folder = Path(folder)
    _check_no_file_in_the_way(folder, what, folder, "move or rename that file, or choose another folder")
    if fcntl is None:
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise BusyError(f"another process is using {what} {folder} (it holds {folder / '.lock'}); wait for it to "
                            "finish, or use another folder.") from None
        yield
    finally:
        os.close(handle)  # closing releases the lock


def check_writable(folder: Path | str, what: str) -> None:
    """Raise a ConfigError unless a file can be created in ``folder`` (created if missing), so that
    a read-only or unwritable folder is named before the work, not after it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(handle)
        os.unlink(name)
    except OSError as e:
        raise ConfigError(f"{what} {folder} cannot be written ({e.strerror or e}); choose a folder you can write, "
                          "or free space there.") from None


# What an OSError from writing means to the user, by errno.
WRITE_FAILURES = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EDQUOT: "the disk quota is exceeded"}
