"""Inference gaps (Cremer, Li & Duvenaud 2018), per datapoint::

    log p(x) - ELBO[q]  =  (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q])
         inference gap  =   approximation gap     +   amortization gap

q is the amortized guide; q* is a diagonal Gaussian optimised separately for each datapoint
(started from the guide's output when the guide is a diagonal Gaussian). log p(x) is taken from the
best estimate available (AIS if asked for, else IWAE-k).
"""

from __future__ import annotations

from typing import Dict, Optional

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.speed.fused_linear import input_gradients_only
from pyro_vae.components.guides import DiagonalNormal
from pyro_vae.model import VAE, without_param_store
from pyro_vae.optimizers.inplace import Adam
from pyro_vae.traces import DATA_PLATE, log_importance_weights
from pyro_vae.estimators.ais import ais
from pyro_vae.estimators.iwae import elbo, iwae
from pyro_vae.estimators.memory import bytes_per_chain, bytes_per_particle, datapoints_per_chunk
from pyro_vae.estimators.result import Estimate
from pyro_vae.estimators.options import DEFAULTS


FINAL_SAMPLES = 100  # fresh samples per datapoint for q*'s final ELBO


@without_param_store
def optimise_local_gaussians(
    vae: VAE, x: torch.Tensor, steps: int = 300, lr: float = 0.05, num_samples: int = 8, memory_gb: Optional[float] = DEFAULTS.memory_gb
) -> Estimate:
    """ELBO of q*(z) = N(m_n, diag s_n^2), fitted to each datapoint by Adam on a reparameterized
    ELBO estimate; the final ELBO uses 100 fresh samples per point.

    Each datapoint's q* is fitted on its own (Adam's update is elementwise), so the datapoints run
    in chunks whose working memory, measured on the model, stays under ``memory_gb``: the fit's
    ``num_samples`` particles with their gradient pass, or the final ELBO's 100."""
    vae.check_points(x)
    per_point = max(num_samples * bytes_per_chain(vae, x), FINAL_SAMPLES * bytes_per_particle(vae, x))
    chunk = datapoints_per_chunk(x.shape[0], per_point, memory_gb, x.device)
    values = torch.empty(x.shape[0], dtype=torch.float64)
    for lo in range(0, x.shape[0], chunk):
        values[lo : lo + chunk] = _local_gaussian_elbo(vae, x[lo : lo + chunk], steps, lr, num_samples).cpu()
    return Estimate("elbo_local_gaussian", values, settings={"steps": steps, "lr": lr, "num_samples": num_samples, "chunk_datapoints": chunk})


def _local_gaussian_elbo(vae: VAE, x: torch.Tensor, steps: int, lr: float, num_samples: int) -> torch.Tensor:
    """q*'s final ELBO per row of ``x`` (float64), after fitting it."""
    n, d = x.shape[0], vae.z_dim
    with torch.no_grad():
        if isinstance(vae.guide_head, DiagonalNormal):
            q = vae.encode(x).base_dist
            loc0, log_scale0 = q.loc.clone(), q.scale.log().clone()
        else:
            loc0 = torch.zeros(n, d, device=x.device, dtype=x.dtype)
            log_scale0 = torch.zeros_like(loc0)
    loc = loc0.requires_grad_(True)
    log_scale = log_scale0.requires_grad_(True)

    def local_guide(xx: torch.Tensor) -> None:
        with pyro.plate(DATA_PLATE, xx.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    opt = Adam([loc, log_scale], lr=lr)
    with torch.enable_grad(), input_gradients_only():
        for _ in range(steps):
            loss = -log_importance_weights(vae.model, local_guide, x, num_particles=num_samples).mean(0).sum()
            # Gradients for q*'s parameters only: the model's parameters are left untouched.
            loc.grad, log_scale.grad = torch.autograd.grad(loss, [loc, log_scale])
            opt.step()
    with torch.no_grad():
        return log_importance_weights(vae.model, local_guide, x, num_particles=FINAL_SAMPLES).double().mean(0)


@without_param_store
def gap_report(
    vae: VAE, x: torch.Tensor, k: int = DEFAULTS.k, ais_steps: Optional[int] = None, memory_gb: Optional[float] = DEFAULTS.memory_gb, **ais_options: object
) -> Dict[str, object]:
    """ELBO, IWAE-k, (AIS,) q* ELBO and the gaps, per datapoint and on average.

    :param ais_steps: if given, log p(x) is read from AIS with this many steps (else from IWAE-k).
    :param ais_options: further settings of :func:`~pyro_vae.estimators.ais.ais` (``num_chains``,
        ``schedule``, ...).
    """
    elbo_q = elbo(vae, x, num_samples=100, memory_gb=memory_gb)
    iw = iwae(vae, x, k=k, memory_gb=memory_gb)
    local = optimise_local_gaussians(vae, x, memory_gb=memory_gb)
    best = iw
    out: Dict[str, object] = {"elbo": elbo_q, "iwae": iw, "elbo_local_gaussian": local}
    if ais_steps:
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
