"""Frey Face (Kingma & Welling 2013, Fig. 2 and 4): 1965 grey images of 28x20 from Roweis's
``frey_rawface.mat``, kept in ``<root>/frey-face`` with its checksum."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pyro_vae.components.registry import DATASETS
from pyro_vae.data.cache import download_file, sha256_of
from pyro_vae.data.datasets import Dataset
from pyro_vae.errors import DataError
from pyro_vae.files import exclusive_lock, write_text_atomically

FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"


@DATASETS.register("frey-face")
def frey_face(*, root: Path, download: bool, path: Optional[str] = None, sha256: Optional[str] = None, train_size: int = 1600) -> Dataset:
    """Frey Face: 1965 grey images of 28x20 from ``frey_rawface.mat``, divided by 256 as in Kingma's
    code; the first ``train_size`` (1600) images train, the rest test.

    Integrity: if ``sha256`` is given the file must match it. Otherwise the checksum seen on first
    use is recorded beside the file (``.sha256``) and every later load must match that record.
    """
    from scipy.io import loadmat

    mat = Path(path).expanduser() if path else root / "frey-face" / "frey_rawface.mat"
    if not mat.exists():
        if path or not download:
            raise DataError(f"{mat} does not exist. Download {FREY_URL} and put it there (or set data.path).")
        with exclusive_lock(mat.parent, "the Frey Face cache", wait=True):
            if not mat.exists():
                download_file(FREY_URL, mat)
    got = sha256_of(mat)
    record = mat.with_name(mat.name + ".sha256")
    if sha256 is not None and got != sha256:
        raise DataError(f"{mat}: checksum mismatch (sha256 {got}, expected {sha256}); download the file again.")
    if sha256 is None:
        if record.exists() and record.read_text().strip() != got:
            raise DataError(
                f"{mat} changed since first use (sha256 {got}, recorded {record.read_text().strip()} in {record}). "
                "Restore the file, or delete the record if the change is intended."
            )
    try:
        ff = loadmat(str(mat))["ff"]
    except Exception as e:
        raise DataError(f"{mat} is not a MATLAB file with an 'ff' array: {e}") from e
    if ff.ndim != 2 or ff.shape[0] != 560:
        raise DataError(f"{mat}: 'ff' has shape {ff.shape}, expected (560, n_images) of 28x20 faces")
    if not record.exists():
        write_text_atomically(record, got + "\n")
    x = torch.from_numpy(ff.T.astype(np.float32) / 256.0)
    if not 0 < train_size < x.shape[0]:
        raise DataError(f"frey-face: train_size {train_size} must lie between 0 and the {x.shape[0]} images")
    return Dataset("frey-face", x[:train_size], x[train_size:], (1, 28, 20), info={"source": str(mat), "sha256": got})

