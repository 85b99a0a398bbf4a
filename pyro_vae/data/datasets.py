"""A run's data: the ``Dataset`` record, ``load_dataset`` (a registered data set by name, cut to
``n_train``/``n_test``, binarized and fingerprinted, as the config's ``data:`` section says), and
the check that the data lies in the likelihood's support.

The data sets themselves register in ``DATASETS``: :mod:`~pyro_vae.data.mnist` (MNIST and
Fashion-MNIST), :mod:`~pyro_vae.data.frey_face`, :mod:`~pyro_vae.data.synthetic` and
:mod:`~pyro_vae.data.external` (``npz`` files, image folders, ``torch.utils.data.Dataset``
classes). Images are returned flattened, float32, in [0, 1].
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from pyro_vae.components.registry import DATASETS
from pyro_vae.data.cache import data_root
from pyro_vae.data.linear_gaussian import LinearGaussian
from pyro_vae.errors import DataError, warn


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

    def __post_init__(self) -> None:
        """Refuse, with a DataError naming the fix, what the trainer and estimators would fail on
        deep inside (a Dataset given to the ``Trainer``, or built by a data set of one's own)."""
        x_dim = None
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            where = f"data set {self.name!r}: x_{split}"
            if not torch.is_tensor(x):
                raise DataError(f"{where} must be a torch tensor, got a {type(x).__module__}.{type(x).__name__}; "
                                "torch.as_tensor(x, dtype=torch.float32) makes one")
            if x.dim() != 2:
                raise DataError(f"{where} must hold flattened datapoints, shape (n, x_dim), got {tuple(x.shape)}; "
                                "x.reshape(len(x), -1) flattens them (x_shape keeps their shape)")
            if x.shape[0] < 1:
                raise DataError(f"{where} holds no datapoints; training and its test ELBO need at least one in each split")
            if x.dtype != torch.float32:
                raise DataError(f"{where} must be float32, as the model's parameters are, got {x.dtype}; x.float() converts it")
            if x_dim is not None and x.shape[1] != x_dim:
                raise DataError(f"data set {self.name!r}: x_train has {x_dim} features per point but x_test {x.shape[1]}")
            x_dim = x.shape[1]
            y = getattr(self, f"y_{split}")
            if y is not None and (not torch.is_tensor(y) or y.shape[:1] != x.shape[:1]):
                raise DataError(f"data set {self.name!r}: y_{split} must be a tensor of one label per point of x_{split} "
                                f"({x.shape[0]}), got {tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}")
        if int(np.prod(self.x_shape)) != x_dim:
            raise DataError(f"data set {self.name!r}: x_shape {tuple(self.x_shape)} holds {int(np.prod(self.x_shape))} values "
                            f"but a point has {x_dim}; give each point's shape before flattening, e.g. ({x_dim},)")

    @property
    def x_dim(self) -> int:
        return int(self.x_train.shape[1])


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
    data = DATASETS.build(name, options or {}, returns=Dataset, root=data_root(root), download=download, **sizes)
    for split, wanted in (("train", n_train), ("test", n_test)):
        if wanted is None:
            continue
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if wanted > x.shape[0]:
            warn(
                f"pyro-vae: data.n_{split}={wanted}, but the {split} set of {name!r} holds {x.shape[0]} points; "
                f"all {x.shape[0]} are used")
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
