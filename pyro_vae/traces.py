"""Per-datapoint log densities read from Pyro traces.

Every objective and estimator that needs per-datapoint quantities (IWAE, wake-sleep, HMC
potentials, AIS) gets them here, from traces of ``model`` and ``guide``, so that they work for
every prior, likelihood and guide in the registry without special cases.

Conventions: the model and guide put every sample site inside a plate named ``"data"`` at
``dim=-1``. Particles / chains are vectorized with an outer plate at ``dim=-2``. Log-probs are
read *unscaled* (Pyro's ``site["log_prob"]`` is already scaled): the subsample scale N/M of the
data plate must act after any nonlinearity over particles (a log-sum-exp), never inside it.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Dict, Iterator, Tuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.trace_struct import Trace
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

DATA_PLATE = "data"
PARTICLE_PLATE = "particles"


def check_local(site: Dict[str, Any], program: str = "model") -> None:
    """Raise a ValueError unless the sample site is inside ``pyro.plate("data")`` at ``dim=-1``
    (per-datapoint objectives and estimators put particles and chains at ``dim=-2``), naming the
    plate it is in when that has another name."""
    stack = site["cond_indep_stack"]
    if any(frame.name == DATA_PLATE and frame.dim == -1 for frame in stack):
        return
    name = site["name"]
    plates = [frame for frame in stack if frame.vectorized]
    if any(frame.name == DATA_PLATE for frame in plates):
        raise ValueError(f"the {program}'s sample site {name!r} is in pyro.plate({DATA_PLATE!r}) at another dim than -1; "
                         "particles and chains go at dim -2, so the data plate has to be the innermost (dim=-1)")
    inside = ""
    if plates:
        names = ", ".join(f"pyro.plate({frame.name!r})" for frame in plates)
        inside = f" (it is in {names}: name the datapoints' plate {DATA_PLATE!r})"
    raise ValueError(f"the {program}'s sample site {name!r} is outside pyro.plate({DATA_PLATE!r}){inside}: per-datapoint "
                     "objectives and estimators need every latent and observed variable to be a datapoint's own")


def _unscaled_log_prob(site: Dict[str, Any]) -> torch.Tensor:
    """log p(value) of one site, masked but without the subsample scale. Computed here rather than
    by ``Trace.compute_log_prob``, which also stores a scaled copy and its sum for every site
    (per-call overhead that the HMC and AIS potentials pay at every leapfrog step)."""
    check_local(site)
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, mask=site["mask"])


def sample_sites(trace: Trace) -> Iterator[Dict[str, Any]]:
    """The trace's sample sites, without the plates' subsample sites."""
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            yield site


def latent_sites(trace: Trace) -> Dict[str, Dict[str, Any]]:
    """The trace's latent (unobserved) sample sites by name, in the order they were sampled."""
    return {site["name"]: site for site in sample_sites(trace) if not site["is_observed"]}


def check_finite_rows(x: torch.Tensor) -> None:
    """Raise a ValueError naming how many rows of ``x`` (datapoints along dim 0) hold NaN or inf,
    and the first: one such value makes every estimate NaN. One read-back per call."""
    finite = torch.isfinite(x).reshape(x.shape[0], -1).all(-1)
    if not bool(finite.all()):
        rows = (~finite).nonzero().flatten()
        raise ValueError(f"x holds NaN or infinite values in {rows.numel()} of its {x.shape[0]} rows (the first: row "
                         f"{int(rows[0])}); drop or repair those rows")


def site_log_probs(trace: Trace, observed: bool | None = None, names: Collection[str] | None = None) -> torch.Tensor:
    """Sum of the unscaled log-probs of the trace's sample sites, per datapoint.

    :param observed: True for observed sites only, False for latent sites only, None for all.
    :param names: if given, only these sites (a conditioned latent counts as observed in Pyro, so
        conditioned traces select latents by name).
    :returns: tensor broadcast to the trace's (particle, datapoint) batch shape.
    """
    total: torch.Tensor | float = 0.0
    for site in sample_sites(trace):
        if observed is not None and site["is_observed"] != observed:
            continue
        if names is not None and site["name"] not in names:
            continue
        # Pyro's site["log_prob"] would carry the subsample scale N/M; the unscaled value is wanted.
        total = total + _unscaled_log_prob(site)
    return total  # type: ignore[return-value]


def _particle_plate(size: int, *values: Any) -> pyro.plate:
    """The outer plate of particles or chains at ``dim=-2``, told the device of the first tensor
    among ``values`` (Pyro otherwise finds the default device by making an empty tensor at every
    plate)."""
    device = next((v.device for v in values if torch.is_tensor(v)), None)
    return pyro.plate(PARTICLE_PLATE, size, dim=-2, device=device)


def traced_pair(
    model: Callable, guide: Callable, *args: Any, num_particles: int = 1, **kwargs: Any
) -> Tuple[Trace, Trace]:
    """Run the guide and the model replayed on it, with ``num_particles`` vectorized particles."""
    with _particle_plate(num_particles, *args):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def log_importance_weights(
    model: Callable, guide: Callable, *args: Any, num_particles: int = 1, **kwargs: Any
) -> torch.Tensor:
    """log w = log p(x, z) - log q(z|x), z ~ q(z|x), per particle and datapoint.

    :returns: tensor of shape ``(num_particles, batch)``; unscaled by any subsampling.
    """
    model_trace, guide_trace = traced_pair(model, guide, *args, num_particles=num_particles, **kwargs)
    log_w = site_log_probs(model_trace) - site_log_probs(guide_trace, observed=False)
    x = args[0]  # the model's first argument is the data batch
    return log_w.expand(num_particles, x.shape[0])


def log_densities(
    model: Callable, latents: Dict[str, torch.Tensor], *args: Any, **kwargs: Any
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(log p(z), log p(x | z)) per chain and datapoint for latent values of shape (chains, batch, ...).

    The chains dimension is an outer plate at ``dim=-2`` so that any number of chains per datapoint
    vectorizes. Their sum is the log joint, the (negative) potential of the batched HMC kernel;
    AIS tempers the second term.
    """
    chains = next(iter(latents.values())).shape[0]
    with _particle_plate(chains, *latents.values()):
        trace = poutine.trace(poutine.condition(model, data=latents)).get_trace(*args, **kwargs)
    log_prior: torch.Tensor | float = 0.0
    log_lik: torch.Tensor | float = 0.0
    for site in sample_sites(trace):
        if site["name"] in latents:
            log_prior = log_prior + _unscaled_log_prob(site)
        else:
            log_lik = log_lik + _unscaled_log_prob(site)
    return log_prior, log_lik  # type: ignore[return-value]


def guide_log_prob(guide: Callable, latents: Dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    """log q(z | x) per chain and datapoint at given latent values (chains, batch, ...)."""
    chains = next(iter(latents.values())).shape[0]
    with _particle_plate(chains, *latents.values()):
        trace = poutine.trace(poutine.condition(guide, data=latents)).get_trace(*args, **kwargs)
    return site_log_probs(trace, names=latents.keys())


def sample_latents(program: Callable, num_samples: int, *args: Any, **kwargs: Any) -> Dict[str, torch.Tensor]:
    """Draw the latent sites of ``program`` (the model: from the prior; the guide: from q(z|x)),
    vectorized over ``num_samples`` in the outer plate: values of shape (num_samples, batch, ...)."""
    with _particle_plate(num_samples, *args):
        trace = poutine.trace(program).get_trace(*args, **kwargs)
    return {
        name: site["value"].expand((num_samples,) + site["fn"].batch_shape[-1:] + site["fn"].event_shape)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }
