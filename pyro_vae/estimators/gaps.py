"""Inference gaps (Cremer, Li & Duvenaud 2018), per datapoint::

    log p(x) - ELBO[q]  =  (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q])
         inference gap  =   approximation gap     +   amortization gap

q is the amortized guide; q* is a diagonal Gaussian optimised separately for each datapoint, over
the flat latents ``u`` (:mod:`pyro_vae.programs`: ``z`` itself for a VAE, the sites mapped to
R^D for a user's model with constrained latents, where q* is the Gaussian pushed through
``biject_to``). log p(x) is taken from the best estimate available (AIS if asked for, else IWAE-k).
Both take a trained VAE or a user's ``(model, guide)``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Optional, Tuple

import torch

from pyro_vae.speed.fused_linear import input_gradients_only
from pyro_vae.components.guides import DiagonalNormal
from pyro_vae.model import VAE, without_param_store
from pyro_vae.optimizers.inplace import Adam
from pyro_vae.programs import accepts_pyro_programs, flat_log_densities, sample_flat
from pyro_vae.estimators.ais import ais
from pyro_vae.estimators.iwae import elbo, iwae
from pyro_vae.estimators.memory import bytes_per_chain, bytes_per_particle, datapoints_per_chunk
from pyro_vae.estimators.result import Estimate
from pyro_vae.estimators.options import DEFAULTS
from pyro_vae.user_numbers import count


FINAL_SAMPLES = 100  # fresh samples per datapoint for q*'s final ELBO
FINAL_LR_FRACTION = 0.01  # q*'s fit ends at this fraction of its step size (see _annealed_lr)
FIT_LR = 0.05  # Adam's first step size in q*'s fit
START_SAMPLES = 100  # draws of the guide whose mean and spread start q* where the guide is not a diagonal Gaussian


@accepts_pyro_programs
@without_param_store
def optimise_local_gaussians(
    vae: VAE, x: torch.Tensor, steps: int = 300, lr: float = FIT_LR, num_samples: int = 8, memory_gb: Optional[float] = DEFAULTS.memory_gb
) -> Estimate:
    """ELBO of q*(u) = N(m_n, diag s_n^2), fitted to each datapoint by ``steps`` of Adam on a
    reparameterized ELBO estimate from ``num_samples`` draws, its step size falling from ``lr`` to
    ``lr / 100`` along a half cosine; the final ELBO uses 100 fresh draws per point.

    q* starts at the guide: its location and scale where the guide is a VAE's diagonal Gaussian,
    else the mean and standard deviation of 100 of its draws in ``u``. Each datapoint's q* is
    fitted on its own (Adam's update is elementwise), so the datapoints run in chunks whose working
    memory, measured on the model, stays under ``memory_gb``: the fit's ``num_samples`` particles
    with their gradient pass, or the final ELBO's 100."""
    steps, num_samples = count("steps", steps, 0), count("num_samples", num_samples)
    if not 0 < lr < math.inf:
        raise ValueError(f"the local Gaussians need a finite lr > 0, got {lr}")
    vae.check_points(x)
    per_point = max(num_samples * bytes_per_chain(vae, x), FINAL_SAMPLES * bytes_per_particle(vae, x))
    chunk = datapoints_per_chunk(x.shape[0], per_point, memory_gb, x.device)
    values = torch.empty(x.shape[0], dtype=torch.float64)
    for lo in range(0, x.shape[0], chunk):
        values[lo : lo + chunk] = _local_gaussian_elbo(vae, x[lo : lo + chunk], steps, lr, num_samples).cpu()
    if not torch.isfinite(values).all():
        raise _diverged(int((~torch.isfinite(values)).sum()), x.shape[0], lr)
    settings = {"steps": steps, "lr": lr, "lr_schedule": f"half cosine to lr * {FINAL_LR_FRACTION}", "num_samples": num_samples,
                "chunk_datapoints": chunk}
    return Estimate("elbo_local_gaussian", values, settings=settings)


@torch.no_grad()
def _start(target: Any, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """q*'s first location and log scale, each ``(n, D)``."""
    if isinstance(target, VAE) and isinstance(target.guide_head, DiagonalNormal):
        q = target.encode(x).base_dist
        return q.loc.clone(), q.scale.log().clone()
    u = sample_flat(target, target.guide, START_SAMPLES, x)  # (S, n, D)
    return u.mean(0), u.std(0).clamp_min(1e-3).log()


def _elbo_draws(target: Any, x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``log p(x, u) - log q*(u)`` at ``num_samples`` reparameterized draws ``u ~ q*``, ``(S, n)``;
    ``log p(x, u)`` carries ``log |det dT/du|`` where the sites are constrained, so its mean is the
    ELBO of q* pushed onto the sites."""
    eps = torch.randn((num_samples,) + loc.shape, dtype=loc.dtype, device=loc.device)
    u = loc + log_scale.exp() * eps
    log_prior, log_lik = flat_log_densities(target, u, x)
    log_q = -(0.5 * eps.square() + log_scale + 0.5 * math.log(2 * math.pi)).sum(-1)  # N(u; loc, scale), diagonal
    return log_prior + log_lik - log_q


def _annealed_lr(lr: float, step: int, steps: int) -> float:
    """Adam's step size at ``step`` of ``steps``: from ``lr`` down to ``lr * FINAL_LR_FRACTION`` along
    a half cosine. At a constant step the fit would stay in the noise of its gradient estimate
    around q*'s optimum, short of the optimum's ELBO: the approximation gap would come out too large
    and the amortization gap too small."""
    return lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * step / steps)))


def _local_gaussian_elbo(target: Any, x: torch.Tensor, steps: int, lr: float, num_samples: int) -> torch.Tensor:
    """q*'s final ELBO per row of ``x`` (float64), after fitting it."""
    loc0, log_scale0 = _start(target, x)
    loc = loc0.requires_grad_(True)
    log_scale = log_scale0.requires_grad_(True)
    opt = Adam([loc, log_scale], lr=lr)
    try:
        with torch.enable_grad(), input_gradients_only():
            for step in range(steps):
                opt.param_groups[0]["lr"] = _annealed_lr(lr, step, steps)
                loss = -_elbo_draws(target, x, loc, log_scale, num_samples).mean(0).sum()
                # Gradients for q*'s parameters only: the model's parameters are left untouched.
                loc.grad, log_scale.grad = torch.autograd.grad(loss, [loc, log_scale])
                opt.step()
        with torch.no_grad():
            return _elbo_draws(target, x, loc, log_scale, FINAL_SAMPLES).double().mean(0)
    except ValueError:  # Pyro's validation of the model's distributions, at latents thrown to infinity
        thrown = ~(torch.isfinite(loc) & torch.isfinite(log_scale.exp())).all(-1)
        if thrown.any():
            raise _diverged(int(thrown.sum()), x.shape[0], lr) from None
        raise


def _diverged(diverged: int, n: int, lr: float) -> ValueError:
    """The error for a fit whose step size threw q*'s location or scale to infinity."""
    return ValueError(f"the local Gaussians' fit diverged at {diverged} of {n} datapoints (q* or its ELBO is not finite) at lr = {lr}; "
                      f"a smaller lr keeps it finite (the default is {FIT_LR})")


@accepts_pyro_programs
@without_param_store
def gap_report(
    vae: VAE, x: torch.Tensor, k: int = DEFAULTS.k, ais_steps: Optional[int] = None, memory_gb: Optional[float] = DEFAULTS.memory_gb, **ais_options: object
) -> Dict[str, object]:
    """ELBO, IWAE-k, (AIS,) q* ELBO and the gaps, per datapoint and on average.

    :param ais_steps: if given, log p(x) is read from AIS with this many steps (else from IWAE-k).
    :param ais_options: further settings of :func:`~pyro_vae.estimators.ais.ais` (``num_chains``,
        ``schedule``, ...).
    """
    # checked here, not after the ELBO's 100 draws per point and the local fits
    k = count("k", k)
    if ais_steps is not None:
        ais_steps = count("ais_steps", ais_steps)
    ais_settings = [name for name in inspect.signature(ais).parameters if name not in ("vae", "x", "num_steps", "memory_gb")]
    unknown = sorted(set(ais_options) - set(ais_settings))
    if unknown:
        raise TypeError(f"gap_report got unknown setting(s) {', '.join(unknown)}; its AIS settings are ais_steps (the number of "
                        f"steps) and those of ais(): {', '.join(ais_settings)}")
    elbo_q = elbo(vae, x, num_samples=100, memory_gb=memory_gb)
    iw = iwae(vae, x, k=k, memory_gb=memory_gb)
    local = optimise_local_gaussians(vae, x, memory_gb=memory_gb)
    best = iw
    out: Dict[str, object] = {"elbo": elbo_q, "iwae": iw, "elbo_local_gaussian": local}
    if ais_steps is not None:
        best = ais(vae, x, num_steps=ais_steps, memory_gb=memory_gb, **ais_options)  # type: ignore[arg-type]
        out["ais"] = best
    log_px = best.per_datapoint
    out["log_px_from"] = best.estimator
    out["per_datapoint"] = {
        "inference_gap": (log_px - elbo_q.per_datapoint),
        "approximation_gap": (log_px - local.per_datapoint),
        "amortization_gap": (local.per_datapoint - elbo_q.per_datapoint),
    }
    out["summary"] = {name: float(v.mean()) for name, v in out["per_datapoint"].items()}  # type: ignore[union-attr]
    return out
