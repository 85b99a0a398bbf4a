"""Networks: maps from an input vector to the raw outputs a prior, likelihood or guide head needs.

A network never decides what its outputs mean: the guide (for the encoder) or the likelihood (for
the decoder) says how many outputs it needs (``out_dim``) and how to read them. This is what lets
any network pair with any guide and likelihood.

Shapes: input ``(..., in_dim)``, output ``(..., out_dim)``; leading dims (particles, chains,
batch) pass through untouched.
"""

from __future__ import annotations

import math
from typing import Callable, List, Sequence, Tuple

import torch
from torch import nn

from pyro_vae.speed import fused_linear
from pyro_vae.components.registry import NETWORKS
from pyro_vae.hardware import check_fits_in_memory

class _InPlaceWithoutGrad(nn.Module):
    """An activation that overwrites its input when no gradient is being recorded (evaluation:
    IWAE-k pushes k x hidden activations per datapoint through it, and a fresh output tensor per
    layer costs an allocation and a pass); with gradients it is the ordinary function."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], fn_: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.name, self.fn, self.fn_ = name, fn, fn_

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.fn(h)
        return self.fn_(h)

    def extra_repr(self) -> str:
        return self.name


class Tanh(_InPlaceWithoutGrad):
    """tanh, in place where no gradient is taken (as its base says)."""

    onednn_name = "tanh"  # fused into the preceding product by fused_linear

    def __init__(self) -> None:
        super().__init__("tanh", torch.tanh, torch.tanh_)


class ReLU(_InPlaceWithoutGrad):
    """ReLU, in place where no gradient is taken (as its base says)."""

    onednn_name = "relu"

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
    if not std >= 0:
        raise ValueError(f"init_std must be a standard deviation >= 0, not {std}")
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
        if not fused_linear.applies(x):
            return super().forward(x)
        # On CPU each wide Linear and the activation after it run as one oneDNN product, with the
        # bias and the activation applied in its epilogue (see fused_linear.py).
        layers = list(self)
        h, i = x, 0
        while i < len(layers):
            layer = layers[i]
            if not isinstance(layer, nn.Linear) or layer.out_features < fused_linear.MIN_OUTPUTS:
                h, i = layer(h), i + 1  # a narrow layer, or an activation oneDNN cannot fuse
                continue
            after = layers[i + 1] if i + 1 < len(layers) else None
            activation = getattr(after, "onednn_name", None)
            h = fused_linear.linear(h, layer.weight, layer.bias, activation or "none")
            i += 2 if activation else 1
        return h


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
    widths = [in_dim, *map(int, hidden), out_dim]
    # float32 weights, and in training as much again for their gradients and twice for Adam's state
    check_fits_in_memory(4 * 4 * sum((a + 1) * b for a, b in zip(widths, widths[1:])),
                         f"the {role}'s weights ({'-'.join(map(str, widths))}) with their gradients and optimizer state",
                         "lower model.z_dim or the networks' hidden sizes")
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
