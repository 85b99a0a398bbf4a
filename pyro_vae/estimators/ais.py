"""Annealed importance sampling (Neal 2001) and bidirectional Monte Carlo (Grosse et al. 2015).

Geometric path from a start density p0 (the prior, or q(z|x): "AIS + encoder") to the
unnormalised posterior p(x, z), one set of chains per datapoint::

    f_t(z) = p0(z)^(1 - beta_t) p(x, z)^beta_t,    0 = beta_0 < ... < beta_T = 1
    log w  = sum_t (beta_t - beta_{t-1}) [log p(x, z_{t-1}) - log p0(z_{t-1})]

with one HMC transition leaving f_t invariant after each increment (the batched kernel of
:mod:`pyro_vae.mcmc.hmc`). ``log p_hat(x) = log mean_chains exp(log w)`` is a stochastic
lower bound *only if the transitions do not depend on the chain's own history*: adapting a chain's
step size from its own acceptances biased the estimate upwards by 0.15 nats on a linear-Gaussian
test. So step sizes are tuned in a pilot run (``pilot_chains`` separate chains, adapted towards
0.65 acceptance as in Wu et al. 2017), and the estimating chains replay the pilot's per-datapoint
step-size schedule, fixed in advance.

BDMC: on data simulated from the model, the pair (x, z) gives an exact posterior sample; running
the same chain backwards (beta 1 -> 0) from it estimates 1/p(x), and
``-log mean exp(log w_rev)`` is a stochastic *upper* bound. The two bracket log p(x).

Densities come from traces of the model and guide, so every registry entry works.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from tqdm.auto import tqdm

from pyro_vae.model import VAE, without_param_store
from pyro_vae.programs import accepts_pyro_programs, chain_values, sample_flat
from pyro_vae.mcmc.hmc import BatchedHMC, to_inference_data
from pyro_vae.estimators.memory import bytes_per_chain, datapoints_per_chunk
from pyro_vae.mcmc.potentials import guide_log_density, model_log_densities
from pyro_vae.estimators.result import Estimate, standard_error
from pyro_vae.estimators.options import AIS_SCHEDULES, AIS_STARTS, DEFAULTS, resolved_memory_gb, AisSchedule as Schedule, AisStart as Start
from pyro_vae.user_numbers import count


def beta_schedule(num_steps: int, kind: Schedule = "sigmoid", sharpness: float = 4.0) -> torch.Tensor:
    """``num_steps + 1`` inverse temperatures from 0 to 1. ``sigmoid``: beta_t proportional to
    sigmoid(sharpness * (2t/T - 1)), rescaled to [0, 1] (Grosse et al. 2015)."""
    num_steps = count("num_steps", num_steps)
    t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    if kind == "linear":
        return t
    if kind not in AIS_SCHEDULES:
        raise ValueError(f"schedule must be one of {AIS_SCHEDULES}, not {kind!r}")
    s = torch.sigmoid(sharpness * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


def _log_mean_exp(a: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


def _anneal(
    vae: VAE, x: torch.Tensor, z: torch.Tensor, betas: torch.Tensor, start: str, num_leapfrog: int,
    step_size: float, target_accept: float, step_schedule: Optional[torch.Tensor], progress: bool,
):
    """Run chains ``z`` (chains, batch, D) along ``betas``.

    :param step_schedule: ``(T, batch)`` step sizes to use at each transition (no adaptation); if
        None, step sizes adapt per chain (a pilot run) and the per-datapoint geometric mean of the
        chains' step sizes is recorded.
    :returns: (log w, mean acceptance per chain, step-size schedule ``(T, batch)``, the chains' final states).
    """

    model_densities, guide_density = model_log_densities(vae, x), guide_log_density(vae, x)

    def log_target_and_p0(zz: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        prior, lik = model_densities(zz)
        return prior + lik, (prior if start == "prior" else guide_density(zz))

    beta = torch.zeros(())

    def potential(zz: torch.Tensor) -> torch.Tensor:
        joint, p0 = log_target_and_p0(zz)
        return -((1 - beta) * p0 + beta * joint)

    # The potential changes with beta between steps: no reuse of U and its gradient.
    kernel = BatchedHMC(potential, step_size=step_size, num_leapfrog=num_leapfrog, target_accept=target_accept, fixed_potential=False)
    log_w = torch.zeros(z.shape[:-1], dtype=torch.float64, device=z.device)
    accept_sum = torch.zeros(z.shape[:-1], device=z.device)
    # written in place, not collected step by step: see `iwae` on small tensors kept between big ones
    used = torch.empty(len(betas) - 1, *z.shape[1:-1], dtype=z.dtype, device=z.device) if step_schedule is None else None
    for t in tqdm(range(1, len(betas)), desc="AIS" if step_schedule is not None else "AIS pilot", disable=not progress):
        with torch.no_grad():
            joint, p0 = log_target_and_p0(z)
        log_w += float(betas[t] - betas[t - 1]) * (joint - p0).double()
        beta = betas[t].to(z.dtype)
        if step_schedule is not None:
            kernel.step_size = step_schedule[t - 1].expand(z.shape[:-1])
        else:
            kernel._init_step(z)
            used[t - 1] = kernel.step_size.log().mean(0).exp()  # the step this transition uses
        z, a = kernel.step(z, adapt=step_schedule is None)
        accept_sum += a
    schedule = step_schedule if step_schedule is not None else used
    return log_w, accept_sum / (len(betas) - 1), schedule, z


def pilot_step_sizes(
    vae: VAE, x: torch.Tensor, betas: torch.Tensor, start: str, num_leapfrog: int, step_size: float,
    target_accept: float, pilot_chains: int, progress: bool = False,
) -> torch.Tensor:
    """Tune a per-datapoint step-size schedule ``(T, batch)`` on separate pilot chains."""
    with torch.no_grad():
        z = sample_flat(vae, vae.model if start == "prior" else vae.guide, pilot_chains, x)
    return _anneal(vae, x, z, betas, start, num_leapfrog, step_size, target_accept, None, progress)[2]


@accepts_pyro_programs
@without_param_store
def ais(
    vae: VAE,
    x: torch.Tensor,
    num_steps: int = DEFAULTS.ais_steps,
    num_chains: int = DEFAULTS.ais_chains,
    schedule: Schedule = DEFAULTS.ais_schedule,
    num_leapfrog: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    start: Start = DEFAULTS.ais_start,
    adapt: bool = True,
    pilot_chains: int = 2,
    progress: bool = False,
    step_schedule: Optional[torch.Tensor] = None,
    memory_gb: Optional[float] = DEFAULTS.memory_gb,
) -> Estimate:
    """AIS estimate of log p(x) per datapoint (rows of ``x``), ``num_chains`` chains each.

    Defaults of Wu et al. (2017) are 16 chains and 10,000 steps; 1000 keeps CPU runs short.
    ``adapt``: tune step sizes in a pilot run first (else ``step_size`` is used throughout).
    ``memory_gb``: the datapoints run in chunks whose chains' working memory (measured on the model,
    :func:`~pyro_vae.estimators.memory.bytes_per_chain`) stays under it. Chains of different
    datapoints never interact, so chunking changes only which random draws are used.
    """
    if start not in AIS_STARTS:
        raise ValueError(f"start must be one of {AIS_STARTS}, not {start!r}")
    num_steps, num_chains, num_leapfrog = count("num_steps", num_steps), count("num_chains", num_chains), count("num_leapfrog", num_leapfrog)
    if adapt and step_schedule is None:
        pilot_chains = count("pilot_chains", pilot_chains)
    vae.check_points(x)
    memory_gb = resolved_memory_gb(memory_gb, x.device)
    betas = beta_schedule(num_steps, schedule)
    n = x.shape[0]
    chunk = datapoints_per_chunk(n, max(num_chains, pilot_chains) * bytes_per_chain(vae, x), memory_gb, x.device)
    # per datapoint, written chunk by chunk into tensors made before the loop (see `iwae`)
    per_point = torch.empty(n, dtype=torch.float64)
    accept = torch.empty(num_chains, n)
    steps = torch.empty(num_steps, n)
    log_w_std = torch.empty(n, dtype=torch.float64)
    final_states = torch.empty(num_chains, n, vae.z_dim)  # where each chain ended: a draw near p(z | x)
    log_weights = torch.empty(num_chains, n, dtype=torch.float64)
    for lo in range(0, n, chunk):
        part = slice(lo, min(n, lo + chunk))
        xs = x[part]
        if step_schedule is not None:
            schedule_part = step_schedule[:, part]
        elif adapt:
            schedule_part = pilot_step_sizes(vae, xs, betas, start, num_leapfrog, step_size, target_accept, pilot_chains, progress)
        else:
            schedule_part = torch.full((num_steps, xs.shape[0]), step_size, dtype=vae.latent_dtype, device=x.device)
        with torch.no_grad():
            program = vae.model if start == "prior" else vae.guide
            z = sample_flat(vae, program, num_chains, xs)
        log_w, chunk_accept, chunk_steps, final = _anneal(vae, xs, z, betas, start, num_leapfrog, step_size, target_accept, schedule_part,
                                                          progress)
        final_states[:, part], log_weights[:, part] = final.detach().cpu(), log_w.cpu()
        per_point[part] = _log_mean_exp(log_w, 0).cpu()
        accept[:, part], steps[:, part] = chunk_accept.cpu(), chunk_steps.cpu()
        log_w_std[part] = log_w.std(0).cpu() if num_chains > 1 else math.nan
    return Estimate(
        "ais",
        per_point,
        settings={
            "num_steps": num_steps, "num_chains": num_chains, "schedule": schedule, "num_leapfrog": num_leapfrog,
            "initial_step_size": step_size, "target_accept": target_accept, "start": start,
            "step_size_tuning": f"pilot run, {pilot_chains} chains" if adapt else "fixed",
            "memory_gb": memory_gb, "chunk_datapoints": chunk,
        },
        diagnostics={
            "accept_mean": float(accept.mean()),
            "accept_min_chain": float(accept.min()),
            "step_size_mean": float(steps.mean()),
            "log_weight_std_mean": float(log_w_std.mean()),
        },
        # one draw per chain: its final state, with its log importance weight and acceptance rate
        chains=to_inference_data(chain_values(vae, final_states.unsqueeze(0)), sample_stats={"log_weight": log_weights.unsqueeze(0),
                                                                                              "acceptance_rate": accept.unsqueeze(0)}),
    )


def _reverse(steps: torch.Tensor) -> torch.Tensor:
    """Forward transition t runs at beta_t; backwards, transition t runs at beta_{T-t}."""
    return torch.cat([steps.flip(0)[1:], steps[:1]])


@accepts_pyro_programs
@without_param_store
def bdmc(
    vae: VAE,
    num_points: int = 100,
    num_steps: int = DEFAULTS.ais_steps,
    num_chains: int = DEFAULTS.ais_chains,
    schedule: Schedule = DEFAULTS.ais_schedule,
    num_leapfrog: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    x: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    progress: bool = False,
    memory_gb: Optional[float] = DEFAULTS.memory_gb,
) -> dict:
    """BDMC on simulated data: forward AIS (lower bound) and reverse AIS from the exact posterior
    sample (upper bound). Returns both estimates and the gap (upper - lower): its mean over points,
    the mean's standard error and its largest value, with the simulated points ``x``. The points
    run in chunks under ``memory_gb``, as in :func:`ais`.

    :param x: points of the data's shape, with ``z`` the latents that made them (flat, ``(n, D)``;
        for a program of one's own in its unconstrained coordinates, :mod:`pyro_vae.programs`);
        without ``z``, ``num_points`` are simulated from the model (``x`` then only tells a
        program of one's own the data's shape)."""
    num_steps, num_chains, num_leapfrog = count("num_steps", num_steps), count("num_chains", num_chains), count("num_leapfrog", num_leapfrog)
    if x is None or z is None:
        num_points = count("num_points (the points BDMC simulates)", num_points)
        if x is not None:  # a user's own model learns the data's shape from these points
            vae.check_points(x)
        x, z = vae.simulate(num_points)
    memory_gb = resolved_memory_gb(memory_gb, x.device)
    betas = beta_schedule(num_steps, schedule)
    n = x.shape[0]
    chunk = datapoints_per_chunk(n, num_chains * bytes_per_chain(vae, x), memory_gb, x.device)
    parts = [slice(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    steps = torch.cat([pilot_step_sizes(vae, x[p], betas, "prior", num_leapfrog, step_size, target_accept, 2, progress) for p in parts], 1)
    lower = ais(vae, x, num_steps=num_steps, num_chains=num_chains, schedule=schedule, num_leapfrog=num_leapfrog, step_size=step_size,
                target_accept=target_accept, start="prior", progress=progress, step_schedule=steps, memory_gb=memory_gb)
    # Reverse: beta 1 -> 0 from the exact posterior sample; transition t uses the forward step size
    # at the same temperature.
    upper_points = torch.empty(n, dtype=torch.float64)
    accept_sum = 0.0
    for p in parts:
        z0 = z[p].unsqueeze(0).expand((num_chains,) + z[p].shape).clone()
        log_w_rev, accept, _, _ = _anneal(vae, x[p], z0, betas.flip(0), "prior", num_leapfrog, step_size, target_accept,
                                       _reverse(steps[:, p]), progress)
        # Backwards, each increment (beta_t - beta_{t-1}) is negative: log_w_rev estimates -log p(x).
        upper_points[p] = -_log_mean_exp(log_w_rev, 0).cpu()
        accept_sum += float(accept.sum())
    upper = Estimate(
        "bdmc_reverse_ais",
        upper_points,
        settings=dict(lower.settings, start="exact posterior sample"),
        diagnostics={"accept_mean": accept_sum / (num_chains * n)},
    )
    gap = upper_points - lower.per_datapoint
    return {"lower": lower, "upper": upper, "gap_mean": float(gap.mean()), "gap_stderr": standard_error(gap), "gap_max": float(gap.max()), "x": x}
