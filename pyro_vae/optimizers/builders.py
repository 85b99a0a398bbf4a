"""Optimizers: one optimizer over all parameters (in-place multi-tensor updates, see
:mod:`pyro_vae.optimizers.inplace`; ``pyro.optim`` would run one torch optimizer per parameter).

The paper's weight prior N(0, s^2 I) (approximate MAP, AEVB Sec. 5) enters as the optimizer's L2
``weight_decay = 1 / s^2``: its gradient theta / s^2 is exactly that of -log N(theta; 0, s^2 I)
added to the full-data loss, at no extra kernel cost.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Tuple

import torch
from pyro.optim.clipped_adam import ClippedAdam

from pyro_vae.errors import ConfigError
from pyro_vae.optimizers.inplace import SGD, Adagrad, Adam, finite_and_nonnegative
from pyro_vae.components.registry import OPTIMIZERS


@OPTIMIZERS.register("adagrad")
def adagrad(*, params: Iterable, lr: float = 0.01, eps: float = 1e-10, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adagrad (Duchi et al. 2011), the paper's optimizer (global step size in {0.01, 0.02, 0.1})."""
    return Adagrad(params, lr=lr, eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(*, params: Iterable, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Plain (momentum) SGD."""
    return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def adam(
    *, params: Iterable, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015)."""
    return Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("clipped_adam")
def clipped_adam(
    *,
    params: Iterable,
    lr: float = 1e-3,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    clip_norm: float = 10.0,
    lrd: float = 1.0,
) -> torch.optim.Optimizer:
    """Pyro's ClippedAdam: Adam with each gradient element clipped to [-clip_norm, clip_norm] and the
    step size multiplied by ``lrd`` at every step."""
    # Pyro checks none of these: a negative lr or eps, a beta outside [0, 1), a clip_norm of 0 (no
    # gradient left) or an lrd above 1 (a step size that grows without end) would train on silently
    # or end in NaN.
    if not finite_and_nonnegative(lr, eps, weight_decay) or not all(0.0 <= b < 1.0 for b in betas) \
            or not 0 < clip_norm < math.inf or not 0 < lrd <= 1:
        raise ValueError(f"ClippedAdam: lr, eps and weight_decay must be finite and >= 0, betas in [0, 1), clip_norm finite and > 0 "
                         f"and lrd in (0, 1]; got lr={lr}, betas={list(betas)}, eps={eps}, weight_decay={weight_decay}, "
                         f"clip_norm={clip_norm}, lrd={lrd}")
    return ClippedAdam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, clip_norm=clip_norm, lrd=lrd)


def build_optimizer(
    name: str, options: dict, params: List[torch.nn.Parameter], weight_prior_std: Optional[float]
) -> torch.optim.Optimizer:
    """The registered optimizer ``name`` over ``params``, with the weight prior N(0, s^2 I), if
    ``weight_prior_std`` s is given, added as ``weight_decay`` 1 / s^2."""
    if weight_prior_std is None:
        return OPTIMIZERS.build(name, options, returns=torch.optim.Optimizer, params=params)
    prior_decay = 1.0 / weight_prior_std**2
    with_prior = dict(options, weight_decay=options.get("weight_decay", 0.0) + prior_decay)
    try:
        return OPTIMIZERS.build(name, with_prior, returns=torch.optim.Optimizer, params=params)
    except ConfigError as e:
        if e.__cause__ is None:  # not the builder's own complaint: nothing to restate
            raise
        # Say it in the config's terms: the weight prior's decay is no option the user wrote.
        raise ConfigError(
            f"optimizer {name!r} with options {dict(options)} (plus weight_decay {prior_decay:g} from "
            f"objective.weight_prior_std {weight_prior_std:g}): {e.__cause__}"
        ) from e.__cause__


def iwae_lr_factor(epoch: int) -> float:
    """Burda et al. (2015): 3^i passes at lr * 10^(-i/7), i = 0..7 (3280 passes in all)."""
    passes = 0
    for i in range(8):
        passes += 3**i
        if epoch < passes:
            return 10.0 ** (-i / 7.0)
    return 10.0 ** (-1.0)


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str = "none", gamma: float = 0.1, step_size: int = 1
) -> Optional[torch.optim.lr_scheduler.LRScheduler]:
    """A per-epoch learning-rate schedule (``optimizer.schedule`` of a config), or None for ``none``:
    ``exponential`` multiplies the rate by ``gamma`` every epoch, ``step`` every ``step_size``
    epochs, ``iwae`` follows :func:`iwae_lr_factor`."""
    if name == "none":
        return None
    if name == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=iwae_lr_factor)
