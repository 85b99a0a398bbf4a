"""Active latent units (Burda, Grosse & Salakhutdinov 2015, Sec. 5.2)::

    A_u = Cov_x( E_{q(z|x)}[z_u] ),   unit u is active if A_u > 0.01

the variance over datapoints of the guide's mean of each latent coordinate: an inactive unit's
posterior mean does not move with x (its q(z_u|x) stays near the prior, it carries no
information about x). Reported beside the IWAE estimate, as Burda et al. report it.

The guide is reached through its Pyro trace, so every guide of the registry works, and so does a
user's own ``(model, guide)`` (the coordinates of its latent sites, in their own values): where a
latent site's distribution has a closed-form mean (the Gaussian guides) it is read from the trace;
otherwise (an IAF guide) it is estimated from ``num_samples`` draws of q(z|x), and the Monte Carlo
noise this adds to the variance over x, E_x[Var_q(z_u) / S], is estimated from the same draws
and subtracted, so that ``A_u`` stays unbiased (with S = 100 that noise is 0.01 for a unit whose
q is the prior: the threshold itself).
"""

from __future__ import annotations

import math
from typing import Any, Dict

import pyro.poutine as poutine
import torch

from pyro_vae.model import VAE, without_param_store
from pyro_vae.programs import accepts_pyro_programs
from pyro_vae.traces import latent_sites, sample_latents
from pyro_vae.user_numbers import count, is_real_number

ACTIVITY_THRESHOLD = 1e-2  # Burda et al.'s


@accepts_pyro_programs
@without_param_store
@torch.no_grad()
def active_units(
    vae: VAE, x: torch.Tensor, threshold: float = ACTIVITY_THRESHOLD, num_samples: int = 100, batch_size: int = 1000
) -> Dict[str, Any]:
    """How many latent coordinates are active over the datapoints ``x`` (shape ``(n, x_dim)``, n >= 2).

    :returns: ``active_units`` (the count), ``num_latents``, ``threshold``, ``activity`` (A_u per
        coordinate, the latent sites' coordinates in trace order), ``posterior_mean`` (how
        E_q[z] was obtained) and ``n``.
    """
    vae.check_points(x)
    if x.shape[0] < 2:
        raise ValueError("active units need at least 2 datapoints (a variance over x)")
    # at least two draws: the Monte Carlo noise of E_q[z] is estimated from them
    num_samples, batch_size = count("num_samples", num_samples, 2), count("batch_size", batch_size)
    if not is_real_number(threshold) or not 0 <= threshold < math.inf:
        raise ValueError(f"threshold (the activity above which a unit counts as active) must be a finite number >= 0, got {threshold!r}")
    means, noise = [], []
    exact = True
    for xb in x.split(batch_size):
        sites = latent_sites(poutine.trace(vae.guide).get_trace(xb)).values()
        try:
            # (batch, coordinates) per site; the data plate is the guide's rightmost batch dim
            means.append(torch.cat([site["fn"].mean.reshape(xb.shape[0], -1) for site in sites], -1))
        except NotImplementedError:  # no closed-form mean (a flow): average draws of q(z|x)
            exact = False
            draws = sample_latents(vae.guide, num_samples, xb)
            values = torch.cat([v.reshape(num_samples, xb.shape[0], -1) for v in draws.values()], -1).double()
            means.append(values.mean(0))
            noise.append(values.var(0) / num_samples)  # Var_q(z_u | x) / S, per datapoint
    per_point = torch.cat(means).double()
    activity = per_point.var(0)  # over datapoints (n - 1 in the denominator)
    if not exact:
        # batches that had a closed-form mean add no noise; none do when one lacks it (same guide)
        activity = activity - torch.cat(noise).mean(0)
    return {
        "active_units": int((activity > threshold).sum()),
        "num_latents": int(activity.numel()),
        "threshold": threshold,
        "activity": [round(float(a), 6) for a in activity],
        "posterior_mean": "closed form" if exact else f"mean of {num_samples} draws of q(z|x), Monte Carlo noise subtracted",
        "n": int(x.shape[0]),
    }
