"""One batched HMC kernel for many independent chains (AIS, the AEVB App. D estimator, MCEM).

Pyro's ``HMC``/``NUTS`` treat the whole potential as one chain: one step size, one accept/reject.
Per-datapoint posteriors are independent, so here every chain (one per datapoint, or several per
datapoint) has its own step size and its own Metropolis test, while the potential and its gradient
are computed for all chains in one vectorized call.

Shapes: positions ``z`` are ``(*chains, D)``; the potential ``U(z)`` returns ``chains`` (one value
per chain, a sum over nothing else); step sizes are ``chains``.

Leapfrog (Neal 2011, "MCMC using Hamiltonian dynamics", eq. 5.18-5.20) with identity mass::

    p <- p - eps/2 grad U(z);  z <- z + eps p;  p <- p - eps/2 grad U(z)

Step sizes adapt per chain by dual averaging (Hoffman & Gelman 2014, Sec. 3.2) towards
``target_accept`` during warmup and are then frozen at the last iterate, which is already a long
average (through ``h_bar``): the paper's ``x_bar`` is measurably conservative here (targets
0.65 / 0.8 / 0.9 gave 0.86 / 0.91 / 0.96 acceptance on Gaussians, the last iterate 0.64 / 0.79 / 0.89).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from pyro_vae.speed.fused_linear import input_gradients_only
from pyro_vae.user_numbers import count, is_real_number

if TYPE_CHECKING:
    import arviz

Potential = Callable[[torch.Tensor], torch.Tensor]


def potential_and_grad(potential: Potential, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """U(z) per chain and dU/dz. Chains are independent, so the gradient of the sum is per chain.
    Only dU/dz is needed: the networks' parameters are constants here."""
    with torch.enable_grad(), input_gradients_only():
        z = z.detach().requires_grad_(True)
        u = potential(z)
        (grad,) = torch.autograd.grad(u.sum(), z)
    return u.detach(), grad


def leapfrog(
    potential: Potential, z: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, step_size: torch.Tensor, num_steps: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_steps`` leapfrog steps; ``step_size`` has the chains' shape. Returns (z, p, U, grad)."""
    eps = step_size.unsqueeze(-1)
    p = p - 0.5 * eps * grad
    u = None
    for i in range(num_steps):
        z = z + eps * p
        u, grad = potential_and_grad(potential, z)
        if i < num_steps - 1:
            p = p - eps * grad
    p = p - 0.5 * eps * grad
    return z, p, u, grad  # type: ignore[return-value]


class DualAveraging:
    """Per-chain dual averaging of log step size (Hoffman & Gelman 2014, Algorithm 5), frozen at
    the last iterate."""

    def __init__(self, step_size: torch.Tensor, target: float, gamma: float = 0.05, t0: float = 10.0):
        self.mu = torch.log(10 * step_size)
        self.log_step = torch.log(step_size)
        self.h_bar = torch.zeros_like(step_size)
        self.target, self.gamma, self.t0 = target, gamma, t0
        self.t = 0

    def update(self, accept_prob: torch.Tensor) -> torch.Tensor:
        self.t += 1
        t = self.t
        w = 1.0 / (t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept_prob)
        self.log_step = self.mu - math.sqrt(t) / self.gamma * self.h_bar
        return self.log_step.exp()

    def final(self) -> torch.Tensor:
        return self.log_step.exp()


@dataclass
class HMCStats:
    """What :meth:`BatchedHMC.run` measured of its chains, besides their draws."""

    accept_prob: torch.Tensor  # (chains) mean acceptance probability over the recorded steps
    step_size: torch.Tensor  # (chains) final step sizes
    # per recorded draw, (num_samples, *chains): "acceptance_rate", "diverging", "energy", "step_size"
    # (ArviZ's names for a sampler's statistics)
    per_draw: Optional[Dict[str, torch.Tensor]] = None


DIVERGENCE_ENERGY = 1000.0  # an energy error above this marks a divergent trajectory (Stan's threshold)


class BatchedHMC:
    """HMC for independent chains, each with its own step size and accept/reject.

    :param potential: U(z) -> per-chain values.
    :param step_size: initial step size (scalar or per chain).
    :param num_leapfrog: leapfrog steps per trajectory.
    :param target_accept: acceptance probability that adaptation aims for.
    :param fixed_potential: True if ``potential`` stays the same between steps; then U and its
        gradient at the state a step returned are reused by the next step (one evaluation of
        ``num_leapfrog + 1`` saved). AIS, which tempers the potential between steps, passes False.
    """

    def __init__(
        self, potential: Potential, step_size: float | torch.Tensor = 0.1, num_leapfrog: int = 10,
        target_accept: float = 0.65, fixed_potential: bool = True,
    ) -> None:
        num_leapfrog = count("num_leapfrog", num_leapfrog)
        if not is_real_number(target_accept) or not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
        # a tensor of step sizes (one per chain) is the sampler's own, already checked
        if not torch.is_tensor(step_size) and (not is_real_number(step_size) or not 0 < step_size < math.inf):
            raise ValueError(f"the initial step size must be a finite number > 0, got {step_size!r}")
        self.potential = potential
        self.initial_step_size = step_size
        self.num_leapfrog = num_leapfrog
        self.target_accept = target_accept
        self.fixed_potential = fixed_potential
        self.step_size: Optional[torch.Tensor] = None
        self._adapter: Optional[DualAveraging] = None
        self._cache: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None  # (z, U(z), grad U(z))

    def _init_step(self, z: torch.Tensor) -> None:
        if self.step_size is None:
            chains = z.shape[:-1]
            self.step_size = torch.as_tensor(self.initial_step_size, dtype=z.dtype, device=z.device).expand(chains).clone()

    def step(self, z: torch.Tensor, adapt: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """One HMC transition for every chain. Returns (new z, acceptance probability per chain)."""
        self._init_step(z)
        if self.fixed_potential and self._cache is not None and self._cache[0] is z:
            _, u0, g0 = self._cache
        else:
            u0, g0 = potential_and_grad(self.potential, z)
        p0 = torch.randn_like(z)
        z1, p1, u1, g1 = leapfrog(self.potential, z, p0, g0, self.step_size, self.num_leapfrog)
        h0 = u0 + 0.5 * (p0 * p0).sum(-1)
        h1 = u1 + 0.5 * (p1 * p1).sum(-1)
        log_accept = (h0 - h1).clamp(max=0.0)
        log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
        accept_prob = log_accept.exp()
        accept = torch.rand_like(accept_prob).log() < log_accept
        z_new = torch.where(accept.unsqueeze(-1), z1.detach(), z)
        # a trajectory whose energy error blows up (Stan's threshold: 1000) or turns non-finite
        self.last_energy = torch.where(accept, h1, h0).detach()
        self.last_diverging = ~torch.isfinite(h1) | (h1 - h0 > DIVERGENCE_ENERGY)
        if self.fixed_potential:
            self._cache = (z_new, torch.where(accept, u1, u0), torch.where(accept.unsqueeze(-1), g1, g0))
        if adapt:
            if self._adapter is None:
                self._adapter = DualAveraging(self.step_size, self.target_accept)
            self.step_size = self._adapter.update(accept_prob)
        return z_new, accept_prob

    def end_adaptation(self) -> None:
        """Freeze step sizes (call after warmup)."""
        if self._adapter is not None:
            self.step_size = self._adapter.final()
            self._adapter = None

    def run(self, z: torch.Tensor, num_warmup: int, num_samples: int, thin: int = 1) -> Tuple[torch.Tensor, HMCStats]:
        """Warm up (adapting step sizes), then record ``num_samples`` draws: ``(num_samples, *chains, D)``."""
        num_warmup, num_samples, thin = count("num_warmup", num_warmup, 0), count("num_samples", num_samples), count("thin", thin)
        for _ in range(num_warmup):
            z, _ = self.step(z, adapt=True)
        self.end_adaptation()
        # draws written into one buffer made before the loop, not kept step by step between the
        # leapfrog's temporaries (small blocks kept among big ones fragment the heap; see `iwae`)
        draws = torch.empty((num_samples,) + z.shape, dtype=z.dtype, device=z.device)
        accept = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        per_draw = {name: torch.empty((num_samples,) + z.shape[:-1], dtype=torch.bool if name == "diverging" else z.dtype,
                                      device=z.device) for name in ("acceptance_rate", "diverging", "energy")}
        for i in range(num_samples * thin):
            z, a = self.step(z)
            accept += a
            if (i + 1) % thin == 0:
                draws[i // thin] = z
                per_draw["acceptance_rate"][i // thin] = a
                per_draw["diverging"][i // thin] = self.last_diverging
                per_draw["energy"][i // thin] = self.last_energy
        self._init_step(z)
        per_draw["step_size"] = self.step_size.expand((num_samples,) + z.shape[:-1]).clone()  # type: ignore[union-attr]
        return draws, HMCStats(accept / max(1, num_samples * thin), self.step_size.clone(), per_draw)  # type: ignore[union-attr]


def _arviz():
    """ArviZ, imported without its once-a-day FutureWarning about its coming refactor: a notice
    for ArviZ's own users that would otherwise be printed amid an evaluation's report, although
    nothing pyro-vae calls (``from_dict``, ``ess``, ``rhat``) is affected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz

    return arviz


def to_inference_data(
    draws: Union[torch.Tensor, Mapping[str, torch.Tensor]], name: str = "z", sample_stats: Optional[Dict[str, torch.Tensor]] = None
) -> "arviz.InferenceData":
    """ArviZ ``InferenceData`` of draws ``(num_samples, chains, batch, D)`` (chains per datapoint
    as ArviZ chains, datapoints and latent dimensions as coordinates), or of several latent sites
    ``{site: (num_samples, chains, batch, *site shape)}``, each its own posterior variable with
    coordinates ``datapoint`` and ``<site>_dim_i``; with the sampler's statistics per draw
    ``(num_samples, chains, batch)`` (``HMCStats.per_draw``) as its ``sample_stats`` group, so that
    ``az.summary`` and ``az.plot_trace`` read it as any sampler's."""
    az = _arviz()
    sites = {name: draws} if torch.is_tensor(draws) else dict(draws)
    posterior, dims = {}, {}
    for site, value in sites.items():
        posterior[site] = value.detach().cpu().double().numpy().swapaxes(0, 1)  # (chain, draw, batch, ...)
        event = ["latent_dim"] if torch.is_tensor(draws) else [f"{site}_dim_{i}" for i in range(value.dim() - 3)]
        dims[site] = ["datapoint", *event]
    stats = {key: value.detach().cpu().numpy().swapaxes(0, 1) for key, value in (sample_stats or {}).items()}
    with warnings.catch_warnings():  # AIS and MCEM keep one draw per chain on purpose
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        return az.from_dict(posterior=posterior, sample_stats=stats or None, dims={**dims, **{key: ["datapoint"] for key in stats}})


# Above this rank-normalized R-hat (Vehtari et al. 2021) a datapoint's chains are counted as not
# agreeing. Their bar for a final analysis is 1.01, which chains of a few dozen draws miss by noise
# alone; 1.1 is the older, looser one (Gelman & Rubin 1992). Independent draws (2 chains of 50, the
# App. D defaults) exceed it in some dimension at 0 of 100 datapoints with 3 dimensions and 2 of 100
# with 20 (measured), so a count well above that means chains that have not mixed.
RHAT_THRESHOLD = 1.1


def chain_diagnostics(draws: torch.Tensor) -> Dict[str, float]:
    """Bulk ESS (mean and min over datapoints and dimensions) and, for several chains, the largest
    R-hat (infinite where no chain moved) and ``datapoints_rhat_above``: how many datapoints have an
    R-hat above :data:`RHAT_THRESHOLD` in some latent dimension: chains that do not agree on that
    posterior, because it has several modes or they have not mixed.
    ``draws``: ``(num_samples, chains, datapoints, D)``."""
    az = _arviz()
    idata = to_inference_data(draws)
    out = {}
    ess = az.ess(idata)["z"].values
    out["ess_bulk_mean"] = float(ess.mean())
    out["ess_bulk_min"] = float(ess.min())
    if draws.shape[1] > 1:
        with np.errstate(divide="ignore", invalid="ignore"):  # a chain that never moved: R-hat inf, said in the counts
            rhat = az.rhat(idata)["z"].values  # (datapoints, D)
        rhat = np.where(np.isnan(rhat), np.inf, rhat)  # undefined where no chain moved: the worst case
        out["rhat_max"] = float(rhat.max())
        out["rhat_threshold"] = RHAT_THRESHOLD
        out["datapoints_rhat_above"] = int((rhat > RHAT_THRESHOLD).any(-1).sum())
    return out
