"""Adagrad, Adam and SGD over all parameters at once, updating in place.

The math (and the names of the state entries, so checkpoints load either way) is that of
``torch.optim.Adagrad``, ``Adam`` and ``SGD`` with ``foreach=True``. Two things differ, both for
speed:

* Every intermediate lives in a buffer allocated once per parameter. ``torch.optim`` allocates
  new tensors of each parameter's size at every step (``sqrt(sum)``, ``grad * -lr``, ...); for
  large weight matrices on CPU each such allocation is served by fresh pages from the kernel,
  and those page faults cost more than the arithmetic.
* On CPU, Adagrad and Adam run torch's fused kernels (``torch._fused_adagrad_``,
  ``torch._fused_adam_``, what ``torch.optim`` runs with ``fused=True``): one pass over each
  parameter instead of four or five foreach passes. Elsewhere (CUDA) the foreach passes run,
  since torch's fused Adagrad is CPU-only and its fused kernels want their step counts on the
  device, where ``torch.optim`` keeps them on the CPU.
* ``torch.optim.Optimizer`` wraps ``add_param_group``, ``zero_grad``, ``state_dict`` and
  ``load_state_dict`` in ``torch._disable_dynamo``, and ``step`` in a helper, that import
  ``torch._dynamo`` on first use, the bulk of a first training step's time. These classes
  use the undecorated methods (the decorators only matter under ``torch.compile``, which
  pyro-vae does not apply to its optimizers).

They remain ``torch.optim.Optimizer`` subclasses, so learning-rate schedulers work unchanged.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch.optim import Optimizer


def _undecorated(method: Callable) -> Callable:
    return getattr(method, "__wrapped__", method)


def _sqrt_into(out: List[torch.Tensor], tensors: List[torch.Tensor]) -> None:
    # one pass per tensor (a foreach copy then an in-place sqrt would read and write twice)
    for o, t in zip(out, tensors):
        torch.sqrt(t, out=o)


@functools.lru_cache(maxsize=None)
def _fused_cpu_kernels_available() -> bool:
    """Whether this torch runs its fused Adagrad and Adam kernels on CPU tensors (torch >= 2.4;
    earlier versions have CUDA kernels only), probed once on one-element tensors."""
    p, g, a, b, step = (torch.zeros(1) for _ in range(5))
    try:
        torch._fused_adagrad_([p], [g], [a], [step], lr=0.1, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False)
        torch._fused_adam_([p], [g], [a], [b], [], [step + 1], amsgrad=False, lr=0.1, beta1=0.9, beta2=0.999,
                           weight_decay=0.0, eps=1e-8, maximize=False)
    except (AttributeError, RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def _fused_cpu_kernel_applies(params: List[torch.Tensor], steps: List[torch.Tensor]) -> bool:
    """Whether torch's fused CPU kernels take these tensors: all on the CPU, one floating dtype,
    and float32 step counts (what those kernels read; ``torch.optim`` keeps the default dtype)."""
    dtype = params[0].dtype
    return (
        _fused_cpu_kernels_available()
        and all(p.device.type == "cpu" and p.dtype == dtype for p in params)
        and dtype in (torch.float32, torch.float64)
        and all(s.dtype == torch.float32 for s in steps)
    )


def finite_and_nonnegative(*values: float) -> bool:
    """Whether every value is a finite number >= 0 (an optimizer's step size, eps, decay)."""
    return all(0.0 <= v < math.inf for v in values)  # NaN fails both comparisons


class _InPlaceOptimizer(Optimizer):
    """Base: per-parameter scratch buffers (not part of ``state_dict``) and the dynamo-free
    methods of ``torch.optim.Optimizer``."""

    add_param_group = _undecorated(Optimizer.add_param_group)
    zero_grad = _undecorated(Optimizer.zero_grad)
    state_dict = _undecorated(Optimizer.state_dict)
    load_state_dict = _undecorated(Optimizer.load_state_dict)

    def __init__(self, params: Iterable, defaults: Dict[str, Any]) -> None:
        super().__init__(params, defaults)
        self._scratch: Dict[Tuple[str, int], torch.Tensor] = {}

    def _scratch_for(self, purpose: str, params: List[torch.Tensor]) -> List[torch.Tensor]:
        """One buffer shaped like each parameter, per purpose, allocated on first use."""
        out = []
        for p in params:
            key = (purpose, id(p))
            buf = self._scratch.get(key)
            if buf is None:
                buf = self._scratch[key] = torch.empty_like(p, memory_format=torch.preserve_format)
            out.append(buf)
        return out

    def _with_grads(self, group: Dict[str, Any]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        return params, [p.grad for p in params]

    def _decayed(self, params: List[torch.Tensor], grads: List[torch.Tensor], weight_decay: float) -> List[torch.Tensor]:
        """grad + weight_decay * param (L2, as torch.optim) in scratch buffers; ``.grad`` is left as is."""
        if weight_decay == 0:
            return grads
        out = self._scratch_for("decayed_grad", params)
        torch._foreach_copy_(out, grads)
        torch._foreach_add_(out, params, alpha=weight_decay)
        return out

    def _counted_states(self, group: Dict[str, Any], params: List[torch.Tensor]) -> List[Dict[str, Any]]:
        """Each parameter's state (created by ``_new_state`` on first use), step count advanced."""
        states = []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)  # a CPU scalar, as torch.optim keeps it
                state.update(self._new_state(group, p))
            states.append(state)
        torch._foreach_add_([state["step"] for state in states], 1.0)
        return states

    def _new_state(self, group: Dict[str, Any], p: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {}

    def _update(self, group: Dict[str, Any], params: List[torch.Tensor], grads: List[torch.Tensor]) -> None:  # pragma: no cover
        """One step of ``params`` with their raw ``grads`` (weight decay not yet added)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = self._with_grads(group)
            if params:
                self._update(group, params, grads)
        return loss


class Adagrad(_InPlaceOptimizer):
    """Adagrad (Duchi, Hazan & Singer 2011): ``s += g^2;  theta -= lr * g / (sqrt(s) + eps)``."""

    capturable = True  # its update reads no host value: a CUDA graph may replay it

    def __init__(self, params: Iterable, lr: float = 0.01, eps: float = 1e-10, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0) -> None:
        if not finite_and_nonnegative(lr, eps, weight_decay, initial_accumulator_value):
            raise ValueError("Adagrad: lr, eps, weight_decay and initial_accumulator_value must be finite and >= 0")
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value))

    def _new_state(self, group: Dict[str, Any], p: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"sum": torch.full_like(p, group["initial_accumulator_value"], memory_format=torch.preserve_format)}

    def _update(self, group: Dict[str, Any], params: List[torch.Tensor], grads: List[torch.Tensor]) -> None:
        states = self._counted_states(group, params)
        sums, steps = [state["sum"] for state in states], [state["step"] for state in states]
        if _fused_cpu_kernel_applies(params, steps):
            torch._fused_adagrad_(params, grads, sums, steps, lr=group["lr"], lr_decay=0.0,
                                  weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
            return
        grads = self._decayed(params, grads, group["weight_decay"])
        denom = self._scratch_for("denom", params)
        torch._foreach_addcmul_(sums, grads, grads, value=1.0)
        _sqrt_into(denom, sums)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])


class Adam(_InPlaceOptimizer):
    """Adam (Kingma & Ba 2015) with bias correction; ``weight_decay`` is L2 (added to the gradient).
    Off the CPU the bias correction reads the step count on the host, so a CUDA graph cannot replay it."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        if not finite_and_nonnegative(lr, eps, weight_decay) or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("Adam: lr, eps and weight_decay must be finite and >= 0, and betas in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _new_state(self, group: Dict[str, Any], p: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}

    def _update(self, group: Dict[str, Any], params: List[torch.Tensor], grads: List[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        states = self._counted_states(group, params)
        steps = [state["step"] for state in states]
        if _fused_cpu_kernel_applies(params, steps):
            # per-tensor step counts: each parameter gets its own bias correction
            torch._fused_adam_(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [], steps,
                               amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2,
                               weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
            return
        grads = self._decayed(params, grads, group["weight_decay"])
        by_step: Dict[float, List[int]] = {}  # bias corrections differ only where step counts do
        for i, state in enumerate(states):
            by_step.setdefault(float(state["step"]), []).append(i)
        for t, members in by_step.items():
            ps = [params[i] for i in members]
            gs = [grads[i] for i in members]
            exp_avg = [self.state[p]["exp_avg"] for p in ps]
            exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in ps]
            torch._foreach_lerp_(exp_avg, gs, 1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, gs, gs, value=1 - beta2)
            denom = self._scratch_for("denom", ps)
            _sqrt_into(denom, exp_avg_sq)
            torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(ps, exp_avg, denom, value=-group["lr"] / (1 - beta1**t))


class SGD(_InPlaceOptimizer):
    """SGD with optional (heavy-ball) momentum: ``b = m b + g;  theta -= lr * b``."""

    capturable = True  # after its first step (which creates the momentum buffers) it reads no host value

    def __init__(self, params: Iterable, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        if not finite_and_nonnegative(lr, momentum, weight_decay):
            raise ValueError("SGD: lr, momentum and weight_decay must be finite and >= 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _update(self, group: Dict[str, Any], params: List[torch.Tensor], grads: List[torch.Tensor]) -> None:
        grads = self._decayed(params, grads, group["weight_decay"])
        if group["momentum"] == 0:
            torch._foreach_add_(params, grads, alpha=-group["lr"])
            return
        running, running_grads = [], []
        for p, g in zip(params, grads):
            state = self.state[p]
            if state.get("momentum_buffer") is None:  # first step: the buffer is the gradient
                state["momentum_buffer"] = g.detach().clone()
            else:
                running.append(state["momentum_buffer"])
                running_grads.append(g)
        if running:
            torch._foreach_mul_(running, group["momentum"])
            torch._foreach_add_(running, running_grads)
        torch._foreach_add_(params, [self.state[p]["momentum_buffer"] for p in params], alpha=-group["lr"])
