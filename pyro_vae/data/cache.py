"""The data folder and what is kept in it: where it is, checksums, ``.npz`` archives written whole
(atomically) and read without unpickling, and downloads.

Where data is cached: ``data.root`` in the config, else ``$PYRO_VAE_DATA``, else
``~/.cache/pyro_vae``. A cache is built under an exclusive lock by the data set that owns it, so
that several processes reading a data set for the first time build it once.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from pyro_vae.errors import DataError
from pyro_vae.files import replaced_atomically, write_bytes_atomically


def data_root(root: Optional[str]) -> Path:
    """The data folder: ``root``, else ``$PYRO_VAE_DATA``, else ``~/.cache/pyro_vae`` (it need not
    exist yet; a file there is an error)."""
    if root:
        path, source = Path(root).expanduser(), "data.root (or --root)"
    elif os.environ.get("PYRO_VAE_DATA"):
        path, source = Path(os.environ["PYRO_VAE_DATA"]).expanduser(), "$PYRO_VAE_DATA"
    else:
        path, source = Path.home() / ".cache" / "pyro_vae", "the default data folder"
    if path.exists() and not path.is_dir():
        raise DataError(f"{source} is {path}, which is a file, not a folder; point it at a folder (it is created if missing).")
    return path


def sha256_of(path: Path) -> str:
    """The file's SHA-256 as hex digits, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def store_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, data)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``numpy.savez`` of ``arrays`` to ``path``, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as f:
        np.savez(f, **arrays)


def load_npz(path: Path, keys: Tuple[str, ...]) -> Dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, which must hold ``keys``; object arrays (pickles)
    are refused."""
    if path.is_file() and not zipfile.is_zipfile(path):
        # np.load would take it for a pickle and suggest allow_pickle=True, which is never safe here
        raise DataError(f"{path} is not a .npz archive (numpy.savez writes one, a zip of .npy arrays).")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DataError(f"{path} lacks array(s) {missing}; delete it and fetch the data again.")
            return {k: f[k] for k in f.files}
    except DataError:
        raise
    except Exception as e:  # zip errors, object arrays (pickle refused) ...
        raise DataError(f"cannot read {path}: {e}. It must be a .npz of plain numeric arrays (no pickled objects).") from e


def download_file(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` (whole or not at all)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except Exception as e:
        raise DataError(f"could not download {url}: {e}. Download it by hand and put it at {dest}.") from e
    store_bytes(dest, data)
