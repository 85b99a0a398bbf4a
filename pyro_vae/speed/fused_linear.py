"""oneDNN's fused Linear + activation for networks on CPU.

``y = activation(x @ W.T + b)`` as one matrix product with the bias and the activation (tanh,
ReLU) applied in its epilogue: the kernel torch's own compiler emits for a CPU Linear followed by
a pointwise op (``torch.ops.mkldnn._linear_pointwise``). Torch's layers take a product, a pass
adding the bias and a pass applying the activation, and MKL handles the short inner dimension of a
20 -> 500 decoder layer poorly.

Where it is used (``applies``, ``MIN_OUTPUTS``, ``MIN_ROWS_WITH_GRAD``): float32 tensors on CPU,
outside ``torch.jit.trace`` and CPU autocast, for layers with at least 64 outputs (a narrow head
is faster in MKL); with gradients only from 256 rows up, where the ``autograd.Function``'s Python
overhead per layer no longer cancels the gain.

The private op is probed once against ``F.linear``; a build without oneDNN, or a torch version that
changed the op, keeps torch's layers. ``PYRO_VAE_FUSED_LINEAR=0`` keeps them too (values differ
by float rounding only, about 1e-6 relative); ``run.json`` records which ran.
"""

from __future__ import annotations

import functools
import threading
from typing import ContextManager, Optional

import torch
import torch.nn.functional as F

from pyro_vae.speed.switches import Switch

MIN_OUTPUTS = 64
MIN_ROWS_WITH_GRAD = 256


# PYRO_VAE_FUSED_LINEAR=0, or ``switched_on.value = False``, keeps torch's layers everywhere. Read at
# first use (a bad value is then a ConfigError, which the CLI checks before any work and reports
# as one line, not as an import-time traceback).
switched_on = Switch(
    "PYRO_VAE_FUSED_LINEAR", on="fused oneDNN layers on CPU",
    off="torch's plain layers, e.g. to compare numbers with another machine to the last bit",
)


def _op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str) -> torch.Tensor:
    """The fused product itself; no autograd. ``activation``: ``tanh``, ``relu`` or ``none``."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "")


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether this torch build has the fused op and it agrees with ``F.linear`` (probed once)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=g) for s in ((5, 3, 7), (4, 7), (4,)))
        with torch.no_grad():
            for name, fn in (("tanh", torch.tanh), ("relu", torch.relu), ("none", lambda t: t)):
                out = _op(x, w, b, name)
                if out.shape != (5, 3, 4) or not torch.allclose(out, fn(F.linear(x, w, b)), atol=1e-5):
                    return False
        return True
    except (RuntimeError, AttributeError, TypeError):
        return False


def enabled() -> bool:
    """Whether networks on CPU use the fused layers in this process."""
    return switched_on() and available()


def applies(x: torch.Tensor) -> bool:
    """Whether a network should run its layers fused on input ``x`` (shape ``(..., in_dim)``)."""
    if not (switched_on() and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() >= 2) or _PLAIN_LAYERS.active:
        return False
    if torch.is_grad_enabled() and x.numel() < MIN_ROWS_WITH_GRAD * x.shape[-1]:
        return False
    if torch.jit.is_tracing() or _autocast_on_cpu():  # under autocast torch's layers pick the dtype
        return False
    return available()


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


class _FusedLinearFunction(torch.autograd.Function):
    """``y = activation(x @ W.T + b)`` with the fused forward and the backward torch itself uses
    for a Linear and its activation::

        g_pre = g_y * (1 - y^2)  (tanh),  g_y * [y > 0]  (relu),  g_y  (none)
        g_x = g_pre @ W,   g_W = g_pre^T x,   g_b = sum_rows g_pre

    computed only for the inputs that require gradients; written with differentiable operations,
    so second derivatives work as well."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str) -> torch.Tensor:  # type: ignore[override]
        y = _op(x, weight, bias, activation)
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
_PLAIN_LAYERS = _Flag()


class _Raised:
    """``with _Raised(flag):`` sets ``flag.active`` inside and restores it after (a class rather
    than a generator-based context manager: HMC enters one at every potential evaluation, and
    ``contextlib``'s machinery costs several times the flag itself)."""

    __slots__ = ("flag", "saved")

    def __init__(self, flag: _Flag) -> None:
        self.flag = flag

    def __enter__(self) -> None:
        self.saved = self.flag.active
        self.flag.active = True

    def __exit__(self, *exc: object) -> None:
        self.flag.active = self.saved


def input_gradients_only() -> ContextManager[None]:
    """Fused layers called inside treat their parameters as constants: gradients reach their
    inputs only. For code that differentiates with respect to latents alone (the HMC potential's
    dU/dz): the backward then skips the weight gradients, which it would otherwise compute because
    the parameters require gradients (torch's own layers skip them by themselves)."""
    return _Raised(_INPUT_GRADIENTS_ONLY)


def plain_layers() -> ContextManager[None]:
    """Networks called inside run torch's layers one by one (so that forward hooks see every
    hidden activation, as the IWAE memory plan needs)."""
    return _Raised(_PLAIN_LAYERS)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str = "none") -> torch.Tensor:
    """``activation(x @ weight.T + bias)`` fused, differentiable when gradients are recorded.
    Shapes: x ``(..., in)``, weight ``(out, in)``, bias ``(out,)``; returns ``(..., out)``."""
    if not torch.is_grad_enabled():
        return _op(x, weight, bias, activation)
    if _INPUT_GRADIENTS_ONLY.active:
        weight, bias = weight.detach(), None if bias is None else bias.detach()
    return _FusedLinearFunction.apply(x, weight, bias, activation)
