"""Importance-sampled log p(x): the IWAE bound (Burda, Grosse & Salakhutdinov 2015)::

    log p(x) >= L_k(x) = E[ log (1/k) sum_{i=1..k} w_i ],   w_i = p(x, z_i) / q(z_i | x),  z_i ~ q(z | x)

evaluated with k = 5000 by default (their evaluation protocol). ``L_1`` is the ELBO; ``L_k`` rises
with k towards log p(x). Also reported: the effective sample size of the normalised weights,
ESS = (sum w)^2 / sum w^2, per datapoint.

Memory: particles and datapoints are processed in chunks sized so that one chunk's working set
stays under ``memory_gb``. Chunks are combined exactly (running log-sum-exp), so chunking changes
only which random draws are used, never the estimator.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from tqdm.auto import tqdm

from pyro_vae.model import VAE, without_param_store
from pyro_vae.programs import accepts_pyro_programs
from pyro_vae.traces import log_importance_weights
from pyro_vae.estimators.memory import bytes_per_particle
from pyro_vae.estimators.result import Estimate
from pyro_vae.estimators.options import DEFAULTS, memory_budget, resolved_memory_gb
from pyro_vae.user_numbers import count


# On CPU, chunks of about this much working memory: for the paper's model all k = 5000 particles
# of four datapoints, so that Pyro's traces are paid once per four images. A model whose particles
# take more memory (a VampPrior) gets fewer per chunk; ``memory_gb`` stays the upper bound.
CPU_CHUNK_BYTES = 128 * 2**20


def plan_chunks(
    k: int, n: int, bytes_per_pair: int, memory_gb: Optional[float], target_bytes: Optional[int] = None,
    device: torch.device = torch.device("cpu"),
) -> Tuple[int, int]:
    """(particles per chunk, datapoints per chunk) with ``kc * nc * bytes_per_pair <= memory``
    (and ``<= target_bytes`` when given)."""
    budget = memory_budget(memory_gb, device)
    if target_bytes is not None:
        budget = min(budget, target_bytes)
    pairs = max(1, budget // max(1, bytes_per_pair))
    kc = max(1, min(k, pairs))
    nc = max(1, min(n, pairs // kc))
    return kc, nc


def _result_buffer(n: int, device: torch.device) -> torch.Tensor:
    """A float64 vector for n per-datapoint results, made before a chunk loop (see `iwae`)."""
    return torch.zeros(n, dtype=torch.float64, device=device)


@torch.no_grad()
def log_weight_stats(
    model: Callable, guide: Callable, x: torch.Tensor, k: int, k_chunk: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """For one datapoint chunk: logsumexp_i log w_i and logsumexp_i 2 log w_i over k particles."""
    lse = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    lse2 = lse.clone()
    done = 0
    while done < k:
        kc = min(k_chunk, k - done)
        log_w = log_importance_weights(model, guide, x, num_particles=kc).double()  # (kc, batch)
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
        done += kc
    return lse, lse2


@accepts_pyro_programs
@without_param_store
@torch.no_grad()
def iwae(
    vae: VAE,
    x: torch.Tensor,
    k: int = DEFAULTS.k,
    memory_gb: Optional[float] = DEFAULTS.memory_gb,
    progress: bool = False,
    chunks: Optional[Tuple[int, int]] = None,
) -> Estimate:
    """IWAE-k estimate of log p(x) for every row of ``x`` (shape ``(n, x_dim)``).

    :param chunks: force (particles, datapoints) per chunk instead of planning them from memory_gb.
    """
    k = count("k", k)
    vae.check_points(x)
    memory_gb = resolved_memory_gb(memory_gb, x.device)
    n = x.shape[0]
    target = CPU_CHUNK_BYTES if x.device.type == "cpu" else None
    kc, nc = chunks or plan_chunks(k, n, bytes_per_particle(vae, x), memory_gb, target, x.device)
    # The results go into buffers made before the loop, not a list of per-chunk tensors: a small
    # tensor kept from each chunk would land between the chunks' big blocks on the heap, so the
    # freed blocks could not merge and the heap would keep growing.
    per_point, ess_all = _result_buffer(n, x.device), _result_buffer(n, x.device)
    for start in tqdm(range(0, n, nc), desc=f"IWAE-{k}", disable=not progress):
        lse, lse2 = log_weight_stats(vae.model, vae.guide, x[start : start + nc], k, kc)
        per_point[start : start + nc] = lse - math.log(k)
        ess_all[start : start + nc] = torch.exp(2 * lse - lse2)
    per_point, ess_all = per_point.cpu(), ess_all.cpu()
    return Estimate(
        "elbo" if k == 1 else "iwae",
        per_point,
        settings={"k": k, "memory_gb": memory_gb, "chunk_particles": kc, "chunk_datapoints": nc},
        diagnostics={"ess_mean": float(ess_all.mean()), "ess_min": float(ess_all.min()), "ess_fraction_mean": float(ess_all.mean() / k)},
    )


@accepts_pyro_programs
@without_param_store
def elbo(vae: VAE, x: torch.Tensor, num_samples: int = 1, memory_gb: Optional[float] = DEFAULTS.memory_gb) -> Estimate:
    """The Monte Carlo ELBO per datapoint, averaged over ``num_samples`` draws of q (a lower bound)."""
    num_samples = count("num_samples", num_samples)
    vae.check_points(x)
    memory_gb = resolved_memory_gb(memory_gb, x.device)
    kc, nc = plan_chunks(num_samples, x.shape[0], bytes_per_particle(vae, x), memory_gb, CPU_CHUNK_BYTES if x.device.type == "cpu" else None,
                         x.device)
    per_point = _result_buffer(x.shape[0], x.device)  # as in `iwae`: no list of results
    with torch.no_grad():
        for start in range(0, x.shape[0], nc):
            total = per_point[start : start + nc]
            done = 0
            while done < num_samples:
                c = min(kc, num_samples - done)
                total += log_importance_weights(vae.model, vae.guide, x[start : start + nc], num_particles=c).double().sum(0)
                done += c
            total /= num_samples
    return Estimate("elbo", per_point.cpu(), settings={"num_samples": num_samples})
