"""Networks: maps from an input vector to the raw outputs a prior, likelihood or guide head needs.

A network never decides what its outputs mean: the guide (for the encoder) or the likelihood (for
the decoder) says how many outputs it needs (``out_dim``) and how to read them. This is what lets
any network pair with any guide and likelihood.

Shapes: input ``(..., in_dim)``, output ``(..., out_dim)``; leading dims (particles, chains,
batch) pass through untouched.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .registry import NETWORKS

class _InPlaceWithoutGrad(nn.Module):
    """An activation that overwrites its input when no gradient is being recorded (evaluation:
    IWAE-k pushes k x hidden activations per datapoint through it, and a fresh output tensor per
    layer costs an allocation and a pass); with gradients it is the ordinary function."""

    def __init__(self, name: str, fn, fn_) -> None:
        super().__init__()
        self.name, self.fn, self.fn_ = name, fn, fn_

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.fn(h)
        return self.fn_(h)

    def extra_repr(self) -> str:
        return self.name


class Tanh(_InPlaceWithoutGrad):
    def __init__(self) -> None:
        super().__init__("tanh", torch.tanh, torch.tanh_)


class ReLU(_InPlaceWithoutGrad):
    def __init__(self) -> None:
        super().__init__("relu", torch.relu, torch.relu_)


ACTIVATIONS = {"tanh": Tanh, "relu": ReLU, "softplus": nn.Softplus, "elu": nn.ELU}
INITS = ("default", "paper", "xavier", "kaiming")


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def initialize(module: nn.Module, scheme: str, std: float = 0.01) -> None:
    """Initialise every Linear/Conv weight and bias in place.

    ``paper``: all weights and biases from N(0, std^2), std = 0.01 (AEVB, Kingma & Welling 2013,
    Sec. 5; read as a standard deviation as in Kingma's code). ``xavier`` / ``kaiming``: the usual
    schemes with zero biases. ``default``: PyTorch's own.
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    if scheme == "default":
        return
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            if scheme == "paper":
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.normal_(m.bias, 0.0, std)
            else:
                if scheme == "xavier":
                    nn.init.xavier_normal_(m.weight)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class MLP(nn.Sequential):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim``, activation after every hidden layer.

    With ``hidden=[500]`` and tanh this is the paper's network (AEVB Appendix C):
    ``h = tanh(W1 x + b1)``, outputs ``W2 h + b2``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int], activation: str) -> None:
        layers: List[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), _activation(activation)]
            width = h
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _fused_linear_applies(x):
            return super().forward(x)
        # On CPU each Linear and the activation after it run as one oneDNN product with the bias
        # and activation applied in its epilogue, instead of a product, a pass adding the bias and
        # a pass applying tanh (measured on 2 threads: 25% less time for IWAE's decoder, 3x less
        # for the 20 -> 500 layer whose short inner dimension MKL handles poorly).
        record = torch.is_grad_enabled()
        constant_parameters = _INPUT_GRADIENTS_ONLY.active
        rows = x.numel() // max(1, x.shape[-1])
        layers = list(self)
        h, i = x, 0
        while i < len(layers):
            layer = layers[i]
            if not isinstance(layer, nn.Linear) or not _fusion_pays(rows, layer.out_features, record):
                h, i = layer(h), i + 1  # an unfused layer, or an activation oneDNN cannot fuse
                continue
            after = layers[i + 1] if i + 1 < len(layers) else None
            fused = after.name if type(after) in _FUSABLE else None
            weight, bias = layer.weight, layer.bias
            if not record:
                h = _fused_linear(h, weight, bias, fused or "none")
            else:
                if constant_parameters:
                    weight, bias = weight.detach(), None if bias is None else bias.detach()
                h = _FusedLinearFunction.apply(h, weight, bias, fused or "none")
            i += 2 if fused else 1
        return h


# Where the fused product pays, measured layer by layer on 2 CPU threads: not for narrow outputs
# (the encoder's 500 -> 40 head is faster in MKL), and with gradients only from a few hundred rows
# (the autograd.Function's Python overhead, about 50 us per layer, cancels the gain at batch 100;
# at batch 400 and 1000 a training step's four layers take 10% less time).
FUSED_MIN_OUTPUTS = 64
FUSED_MIN_ROWS_WITH_GRAD = 256


def _fusion_pays(rows: int, out_features: int, record: bool) -> bool:
    return out_features >= FUSED_MIN_OUTPUTS and (not record or rows >= FUSED_MIN_ROWS_WITH_GRAD)


# Activations oneDNN applies inside the product (`_linear_pointwise` attribute names). Others
# (softplus, elu) run as a separate module after an unfused product.
_FUSABLE = (Tanh, ReLU)


def _fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str) -> torch.Tensor:
    """``activation(x @ weight.T + bias)`` as one oneDNN matrix product (the kernel torch's own
    compiler emits for a CPU Linear followed by a pointwise op); no autograd."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "")


class _FusedLinearFunction(torch.autograd.Function):
    """``y = activation(x @ W.T + b)`` with the fused forward and the backward torch itself uses
    for a Linear and its activation::

        g_pre = g_y * (1 - y^2)  (tanh),  g_y * [y > 0]  (relu),  g_y  (none)
        g_x = g_pre @ W,   g_W = g_pre^T x,   g_b = sum_rows g_pre

    computed only for the inputs that require gradients; written with differentiable operations,
    so second derivatives work as well."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str) -> torch.Tensor:  # type: ignore[override]
        y = _fused_linear(x, weight, bias, activation)
        ctx.activation = activation
        ctx.save_for_backward(x, weight, y)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):  # type: ignore[override]
        x, weight, y = ctx.saved_tensors
        if ctx.activation == "tanh":
            grad_pre = torch.ops.aten.tanh_backward(grad_y, y)
        elif ctx.activation == "relu":
            grad_pre = torch.ops.aten.threshold_backward(grad_y, y, 0)
        else:
            grad_pre = grad_y
        need_x, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_x = grad_pre @ weight if need_x else None
        rows = grad_pre.reshape(-1, grad_pre.shape[-1])
        grad_weight = rows.T @ x.reshape(-1, x.shape[-1]) if need_weight else None
        grad_bias = rows.sum(0) if need_bias else None
        return grad_x, grad_weight, grad_bias, None


class _Flag(threading.local):
    active = False


_INPUT_GRADIENTS_ONLY = _Flag()


@contextmanager
def input_gradients_only() -> Iterator[None]:
    """Networks called inside treat their parameters as constants: gradients reach their inputs
    only. For code that differentiates with respect to latents alone (the HMC potential's dU/dz):
    the fused layers' backward then skips the weight gradients, which autograd would otherwise
    compute because the parameters require gradients."""
    saved = _INPUT_GRADIENTS_ONLY.active
    _INPUT_GRADIENTS_ONLY.active = True
    try:
        yield
    finally:
        _INPUT_GRADIENTS_ONLY.active = saved


@functools.lru_cache(maxsize=None)
def fused_linear_available() -> bool:
    """Whether this torch build has the oneDNN fused Linear and it agrees with ``F.linear`` (probed
    once on a small input; a build without oneDNN, or a torch version that changed the private op,
    falls back to the plain layers)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=g) for s in ((5, 3, 7), (4, 7), (4,)))
        with torch.no_grad():
            for name, fn in (("tanh", torch.tanh), ("relu", torch.relu), ("none", lambda t: t)):
                out = _fused_linear(x, w, b, name)
                if out.shape != (5, 3, 4) or not torch.allclose(out, fn(F.linear(x, w, b)), atol=1e-5):
                    return False
        return True
    except (RuntimeError, AttributeError, TypeError):
        return False


def _fused_linear_setting(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError(
            f"PYRO_VAE_FUSED_LINEAR={value!r}: use 1 (fused oneDNN layers on CPU, the default) or 0 "
            "(torch's plain layers, e.g. to compare numbers with another machine to the last bit)"
        )
    return value == "1"


# Off with PYRO_VAE_FUSED_LINEAR=0 (or by setting this attribute): every MLP then runs torch's
# plain layers. Values differ by float rounding only (about 1e-6 relative).
USE_FUSED_LINEAR = _fused_linear_setting(os.environ.get("PYRO_VAE_FUSED_LINEAR", "1"))


def fused_linear_enabled() -> bool:
    """Whether MLPs on CPU use the fused oneDNN layers in this process (recorded in run.json)."""
    return USE_FUSED_LINEAR and fused_linear_available()


def _fused_linear_applies(x: torch.Tensor) -> bool:
    return (
        USE_FUSED_LINEAR
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() >= 2
        and not torch.jit.is_tracing()
        and fused_linear_available()
    )


@NETWORKS.register("mlp")
def mlp(
    *,
    in_dim: int,
    out_dim: int,
    x_shape: Tuple[int, ...],
    role: str,
    hidden: List[int] = [500],  # noqa: B006 (never mutated)
    activation: str = "tanh",
    init: str = "default",
    init_std: float = 0.01,
) -> nn.Module:
    """Multilayer perceptron; ``init: paper`` draws every parameter from N(0, init_std^2)."""
    if any(int(h) <= 0 for h in hidden):
        raise ValueError(f"hidden sizes must be positive, got {hidden}")
    net = MLP(in_dim, out_dim, [int(h) for h in hidden], activation)
    initialize(net, init, init_std)
    return net


class _ImageShape(nn.Module):
    def __init__(self, shape: Tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[:-1] + self.shape)


class ConvEncoder(nn.Module):
    """Two stride-2 3x3 convolutions then a linear layer; input ``(..., C*H*W)`` flattened."""

    def __init__(self, x_shape: Tuple[int, int, int], out_dim: int, channels: int, hidden: int, act: str):
        super().__init__()
        c, h, w = x_shape
        self.x_shape = x_shape
        self.conv = nn.Sequential(
            nn.Conv2d(c, channels, 3, stride=2, padding=1),
            _activation(act),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
            _activation(act),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, c, h, w)).shape[-1]
        self.head = nn.Sequential(nn.Linear(n_flat, hidden), _activation(act), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        x = x.reshape((-1,) + self.x_shape)
        return self.head(self.conv(x)).reshape(batch + (-1,))


class ConvDecoder(nn.Module):
    """Linear layer to a (2*channels, H/4, W/4) map, two transposed convolutions, cropped to (H, W).

    The output holds ``out_dim // (H*W)`` values per pixel (one per likelihood parameter), laid out
    parameter-major and flattened so that the likelihood can split it like an MLP's output.
    """

    def __init__(self, in_dim: int, x_shape: Tuple[int, int, int], out_dim: int, channels: int, hidden: int, act: str):
        super().__init__()
        c, h, w = x_shape
        n_pix = h * w
        if out_dim % n_pix:
            raise ValueError(f"conv decoder: out_dim {out_dim} is not a multiple of H*W={n_pix}")
        self.h, self.w, self.out_ch = h, w, out_dim // n_pix
        self.h4, self.w4 = math.ceil(h / 4), math.ceil(w / 4)
        self.fc = nn.Sequential(
            nn.Linear(in_dim, hidden), _activation(act), nn.Linear(hidden, 2 * channels * self.h4 * self.w4), _activation(act)
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),
            _activation(act),
            nn.ConvTranspose2d(channels, self.out_ch, 4, stride=2, padding=1),
        )
        self.channels = channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        t = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, 2 * self.channels, self.h4, self.w4)
        out = self.deconv(t)[..., : self.h, : self.w]
        return out.reshape(batch + (-1,))


@NETWORKS.register("conv")
def conv(
    *,
    in_dim: int,
    out_dim: int,
    x_shape: Tuple[int, ...],
    role: str,
    channels: int = 32,
    hidden: int = 256,
    activation: str = "relu",
    init: str = "default",
    init_std: float = 0.01,
) -> nn.Module:
    """A small convolutional net for images (encoder or decoder, chosen by where it is used)."""
    shape = tuple(x_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3:
        raise ValueError(f"the conv network needs image data (C, H, W); this data set has shape {x_shape}")
    if role == "encoder":
        net: nn.Module = ConvEncoder(shape, out_dim, channels, hidden, activation)
    else:
        net = ConvDecoder(in_dim, shape, out_dim, channels, hidden, activation)
    initialize(net, init, init_std)
    return net
