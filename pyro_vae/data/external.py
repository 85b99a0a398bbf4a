"""Data a user already has: a ``.npz`` file (``npz``), a folder of images (``image_folder``) or a
``torch.utils.data.Dataset`` class (``torch_dataset``). The last two are read once into arrays and
cached in the data folder as ``.npz``, keyed by what they were read from, so that later runs load
the cache (and are fingerprinted like every other data set).

    data: {name: npz, path: my_data.npz, test_fraction: 0.1}
    data: {name: image_folder, path: faces/, size: [28, 20], channels: 1}
    data: {name: torch_dataset, target: "torchvision.datasets:FashionMNIST", kwargs: {root: data, download: true}, split_argument: train}
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from pyro_vae.components.registry import DATASETS
from pyro_vae.data.cache import load_npz, save_npz
from pyro_vae.data.datasets import Dataset
from pyro_vae.errors import DataError, warn
from pyro_vae.files import exclusive_lock

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _cache_path(root: Path, kind: str, key: Dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return root / kind / f"{digest}.npz"


def _check_test_fraction(test_fraction: float) -> None:
    if not 0 < test_fraction < 1:
        raise DataError(f"data.test_fraction must lie strictly between 0 and 1 (the share of the points held out for testing), "
                        f"not {test_fraction}")


def _test_size(n: int, test_fraction: float, source: str) -> int:
    """How many of ``n`` points a ``test_fraction`` holds out: at least one, and one left to train on."""
    _check_test_fraction(test_fraction)
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_test < 1:
        raise DataError(f"{source}: {n} points are too few to hold out {n_test} for testing")
    return n_test


def _split(x: np.ndarray, y: Optional[np.ndarray], test_fraction: float, seed: int, source: str) -> Tuple[np.ndarray, ...]:
    """A seeded random split: the classes of a folder come in order, so the last rows would be one class."""
    n = len(x)
    n_test = _test_size(n, test_fraction, source)
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[: n - n_test], order[n - n_test :]
    return x[train], x[test], (None if y is None else y[train]), (None if y is None else y[test])


def _dataset(name: str, arrays: Dict[str, np.ndarray], source: str) -> Dataset:
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    shape = tuple(int(s) for s in x_train.shape[1:])
    flat = lambda v: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32).reshape(len(v), -1))  # noqa: E731
    labels = lambda k: torch.from_numpy(arrays[k].astype(np.int64)) if k in arrays else None  # noqa: E731
    return Dataset(name, flat(x_train), flat(x_test), shape, labels("y_train"), labels("y_test"), info={"source": source})


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
    _check_test_fraction(test_fraction)
    a = load_npz(p, ())
    if "x_train" in a and "x_test" in a:
        xtr, xte, ytr, yte = a["x_train"], a["x_test"], a.get("y_train"), a.get("y_test")
    elif "x" in a:
        _check_x(p, "x", a["x"])
        n = len(a["x"])
        n_test = _test_size(n, test_fraction, str(p))
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
        warn(
            f"pyro-vae: {p}: x holds whole numbers from {xtr.min()} to {xtr.max()} as {xtr.dtype}, used as they are. If "
            "they are 8-bit images, save them as uint8 (e.g. x.astype(np.uint8)): those are read as grey levels in [0, 1].")
    flat = lambda v: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32).reshape(len(v), -1) * np.float32(scale))  # noqa: E731
    lab = lambda v: None if v is None else torch.from_numpy(np.asarray(v).astype(np.int64))  # noqa: E731
    info = {"source": str(p), **({"scaled": "uint8 / 255"} if scale != 1.0 else {})}
    return Dataset("npz", flat(xtr), flat(xte), shape, lab(ytr), lab(yte), info=info)



@DATASETS.register("image_folder")
def image_folder(
    *, root: Path, download: bool, path: str, size: List[int] = [28, 28], channels: int = 1,  # noqa: B006
    test_fraction: float = 0.1, split_seed: int = 0,
) -> Dataset:
    """Every image below ``path`` (torchvision's ``ImageFolder`` layout: one subfolder per class,
    whose index becomes the label; images directly in ``path`` are read too, unlabelled), converted
    to ``channels`` (1: grey, 3: RGB), resized to ``size`` (height, width) and scaled to [0, 1].
    A seeded random ``test_fraction`` is held out."""
    from PIL import Image

    _check_test_fraction(test_fraction)  # before the images are read
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path {folder} is not a folder of images; point it at one (one subfolder per class, or images)")
    if channels not in (1, 3) or len(size) != 2 or min(size) < 1:
        raise DataError(f"image_folder needs channels 1 or 3 and size [height, width] of positive numbers, not {channels}, {size}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) below {folder}")
    classes = sorted({p.parent.name for p in files if p.parent != folder})
    key = {"path": str(folder.resolve()), "size": list(size), "channels": channels, "test_fraction": test_fraction,
           "split_seed": split_seed, "files": [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]}
    cache = _cache_path(root, "image_folder", key)
    with exclusive_lock(cache.parent, "the image cache", wait=True):
        if not cache.exists():
            images, labels = [], []
            for p in files:
                try:
                    with Image.open(p) as im:
                        im = im.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                        arr = np.asarray(im, dtype=np.float32) / 255.0
                except Exception as e:  # a damaged or unreadable file: named, not a traceback
                    raise DataError(f"cannot read the image {p}: {e}; remove it or replace it") from None
                images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
                labels.append(classes.index(p.parent.name) if p.parent != folder else -1)
            x, y = np.stack(images), np.asarray(labels)
            x_train, x_test, y_train, y_test = _split(x, y if classes else None, test_fraction, split_seed, str(folder))
            arrays = {"x_train": x_train, "x_test": x_test}
            if y_train is not None:
                arrays.update(y_train=y_train, y_test=y_test)
            save_npz(cache, **arrays)
    return _dataset("image_folder", load_npz(cache, ("x_train", "x_test")), f"{folder} ({len(files)} images, cached in {cache})")


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise DataError(f"data.target {target!r} must read module:Class, e.g. 'torchvision.datasets:FashionMNIST'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise DataError(f"data.target {target!r}: {e}; name an importable module and a class in it") from None


def _to_arrays(dataset: Any, target: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Every item of a map-style dataset, ``x`` or ``(x, y)``, as arrays (PIL images become [0, 1] grey levels)."""
    xs, ys = [], []
    try:
        for i in range(len(dataset)):
            item = dataset[i]
            x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
            if not torch.is_tensor(x):
                x = np.asarray(x, dtype=np.float32)
                x = x / 255.0 if x.max(initial=0) > 1 else x
            xs.append(np.asarray(x, dtype=np.float32))
            ys.append(y)
    except Exception as e:
        raise DataError(f"reading {target}: item {len(xs)} failed ({type(e).__name__}: {e})") from None
    if not xs:
        raise DataError(f"{target} holds no items")
    labelled = all(isinstance(y, (int, np.integer)) or (torch.is_tensor(y) and y.numel() == 1) for y in ys)
    return np.stack(xs), (np.asarray([int(y) for y in ys]) if labelled else None)


@DATASETS.register("torch_dataset")
def torch_dataset(
    *, root: Path, download: bool, target: str, kwargs: Dict[str, Any] = {},  # noqa: B006
    split_argument: Optional[str] = None, test_fraction: float = 0.1, split_seed: int = 0,
) -> Dataset:
    """A map-style ``torch.utils.data.Dataset`` class ``target`` (``module:Class``), built with
    ``kwargs``; its items are ``x`` or ``(x, y)`` tensors or images. With ``split_argument`` the
    train and test sets are ``Class(**kwargs, <split_argument>=True/False)`` (torchvision's
    ``train``); otherwise a seeded random ``test_fraction`` of one set is held out. Importing the
    module runs its code: name only modules you trust."""
    if not split_argument:
        _check_test_fraction(test_fraction)  # before the data set is built
    key = {"target": target, "kwargs": kwargs, "split_argument": split_argument, "test_fraction": test_fraction, "split_seed": split_seed}
    cache = _cache_path(root, "torch_dataset", key)
    with exclusive_lock(cache.parent, "the dataset cache", wait=True):
        if not cache.exists():
            cls = _import_target(target)
            try:
                sets = [cls(**kwargs, **{split_argument: flag}) for flag in (True, False)] if split_argument else [cls(**kwargs)]
            except Exception as e:
                raise DataError(f"building {target}(**{kwargs}) failed: {type(e).__name__}: {e}") from None
            read = [_to_arrays(s, target) for s in sets]
            if split_argument:
                (x_train, y_train), (x_test, y_test) = read
            else:
                x_train, x_test, y_train, y_test = _split(read[0][0], read[0][1], test_fraction, split_seed, target)
            arrays = {"x_train": x_train, "x_test": x_test}
            if y_train is not None and y_test is not None:
                arrays.update(y_train=y_train, y_test=y_test)
            save_npz(cache, **arrays)
    return _dataset("torch_dataset", load_npz(cache, ("x_train", "x_test")), f"{target} (cached in {cache})")
