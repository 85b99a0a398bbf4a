"""Any Pyro model and guide as the estimators read them.

The estimators reach a model only through Pyro traces (:mod:`pyro_vae.traces`), so they need of it
what this wrapper gives: ``model(x)`` and ``guide(x)``, the datapoints in ``pyro.plate("data", n)``
(the innermost plate, ``dim=-1``), and continuous latent sample sites whose shape beyond that plate
is their event shape (``dist.Normal(loc, scale).to_event(1)``). The guide samples the model's
latent sites, each of the same shape, and no others: IWAE's weight is p(x, z) / q(z | x) over
exactly those sites. Both broadcast over batch dimensions left of the data plate, where the
estimators put their particles and chains (``pyro.plate("particles", dim=-2)``).

The samplers (AIS, the App. D estimator) see the latent sites as one flat vector per datapoint,
``u`` of shape ``(chains, n, D)``, in the order the model samples them. A site whose support is
not the real line (``LogNormal``: positive; ``Beta``: an interval; ``Dirichlet``: the simplex) is
mapped there by ``T = biject_to(support)`` (as Pyro's own HMC does): its value is ``T(u)``, and its
densities in ``u`` carry ``log |det dT/du|``, so the potentials are smooth on all of R^D and every
draw is in the support. ``D`` counts the unconstrained sizes (a Dirichlet over K categories takes
K - 1). The chains an estimate keeps are handed back in the sites' own values
(:func:`chain_values`). A trained :class:`~pyro_vae.model.VAE` offers the same interface with its
one real site ``z``, where ``u`` is ``z``.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Tuple, TypeVar, Union

import pyro
import pyro.poutine as poutine
from pyro.distributions.util import sum_rightmost
import torch
from torch.distributions import biject_to
from torch.distributions.transforms import Transform

from pyro_vae.components.distributions import is_real_support
from pyro_vae.model import VAE
from pyro_vae.errors import warn
from pyro_vae.traces import (
    DATA_PLATE, check_finite_rows, check_local, guide_log_prob, latent_sites, log_densities, sample_latents, sample_sites, traced_pair,
)

F = TypeVar("F", bound=Callable[..., Any])


def _is_discrete(support: Any) -> bool:
    try:
        return bool(support.is_discrete)
    except NotImplementedError:  # a dependent support does not say; _to_support names it
        return False


def _to_support(name: str, support: Any) -> Transform:
    """``T = biject_to(support)``, from R^D onto the site's support."""
    try:
        return biject_to(support)
    except NotImplementedError:
        raise ValueError(f"latent site {name!r} has support {support}, which torch maps onto from no unconstrained space "
                         "(biject_to); give the site a distribution with a standard support (real, positive, an interval, "
                         "the simplex)") from None


def _first_trace(program: Callable[..., Any], role: str, point: torch.Tensor) -> poutine.Trace:
    """The trace of ``program`` on one datapoint; a data plate that subsamples is named (the
    estimators score every row of ``x``, and Pyro's own error about it speaks of a mismatch)."""
    try:
        return poutine.trace(program).get_trace(point)
    except ValueError as e:
        if "subsample" not in str(e):
            raise
        raise ValueError(f"the {role} subsamples pyro.plate({DATA_PLATE!r}) ({str(e).splitlines()[0]}); the estimators score "
                         "every row of x: pass the rows to score as x and drop subsample_size from the plate") from None


def _warn_of_scales(model_trace: poutine.Trace) -> None:
    """A model that scales a site's log-density (``poutine.scale``, a KL weight) is scored without
    the scale: log p(x) is the model's as its distributions define it, which is what a lower
    bound trained with a weight is compared on. Said once, so that it is not a surprise."""
    scaled = {site["name"]: site["scale"] for site in sample_sites(model_trace)
              if not (isinstance(site["scale"], (int, float)) and site["scale"] == 1.0)}
    if scaled:
        listed = ", ".join(f"{name!r} by {scale}" for name, scale in scaled.items())
        warn(f"pyro-vae: the model scales the log-density of {listed} (poutine.scale); log p(x) is estimated "
             "without the scale, for the model as its distributions define it")


class PyroModel:
    """``model(x)`` and ``guide(x)`` of a user's own, for :func:`~pyro_vae.estimators.iwae`,
    :func:`~pyro_vae.estimators.ais`, :func:`~pyro_vae.estimators.bdmc` and
    :func:`~pyro_vae.estimators.hmc_marginal_likelihood`. The latent sites are found, and the
    guide checked against them, by running both once on the first datapoint, at the first estimate.

    :param guide: ``guide(x)``, a distribution q(z | x) over the same latent sites; IWAE draws from
        it, AIS from it with ``start="encoder"``, and the App. D estimator starts its chains there.
    """

    def __init__(self, model: Callable[..., Any], guide: Callable[..., Any]) -> None:
        self.model, self.guide = model, guide
        self.sites: Optional[Dict[str, torch.Size]] = None  # name -> shape per datapoint (constrained)
        self.x_dim: int = 0
        self._transforms: Dict[str, Transform] = {}  # name -> T, unconstrained to the site's support
        self._flat_shapes: Dict[str, torch.Size] = {}  # name -> shape per datapoint of its u
        self.constrained = False  # whether any site's T is not the identity (then densities over u carry its Jacobian)
        self._template: Optional[torch.Tensor] = None  # one datapoint, for simulated data of its shape
        self._observed: List[str] = []  # the model's observed sites
        self.latent_dtype = torch.get_default_dtype()  # the dtype of the latent sites, which may differ from x's (counts)

    def check_points(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` holds n >= 1 finite datapoints along its first dimension;
        on the first, find the model's latent sites and check the guide against them."""
        if not torch.is_tensor(x):
            raise ValueError(f"x must be a torch tensor of n >= 1 datapoints along its first dimension, got a "
                             f"{type(x).__module__}.{type(x).__name__}; torch.as_tensor(x, dtype=torch.float32) makes one")
        if x.dim() < 1 or x.shape[0] < 1:
            raise ValueError(f"x must be a tensor of n >= 1 datapoints along its first dimension, got shape {tuple(x.shape)}")
        if x.is_floating_point():
            check_finite_rows(x)
        if self.sites is not None:
            return
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
            model_trace = _first_trace(self.model, "model", x[:1])
            _warn_of_scales(model_trace)
            model_sites = latent_sites(model_trace)
            for name, site in model_sites.items():
                if _is_discrete(site["fn"].support):
                    raise ValueError(f"latent site {name!r} is discrete; the estimators need continuous latents "
                                     "(enumerate or marginalise discrete ones in the model)")
                check_local(site, "model")
            if not model_sites:
                raise ValueError(f"the model has no latent sample sites inside pyro.plate({DATA_PLATE!r}); nothing to integrate out")
            self._check_guide(model_sites, latent_sites(_first_trace(self.guide, "guide", x[:1])))
            self._check_broadcasting(x[:1])
        self._observed = [name for name, site in model_trace.nodes.items() if site["type"] == "sample" and site["is_observed"]]
        self.sites = {name: site["value"].shape[1:] for name, site in model_sites.items()}
        self._transforms = {name: _to_support(name, site["fn"].support) for name, site in model_sites.items()}
        self._flat_shapes = {name: self._transforms[name].inverse_shape(site["value"].shape)[1:] for name, site in model_sites.items()}
        self.constrained = not all(is_real_support(site["fn"].support) for site in model_sites.values())
        self.latent_dtype = next(iter(model_sites.values()))["value"].dtype
        self.x_dim = int(x[0].numel())
        self._template = x[:1].detach()

    @staticmethod
    def _check_guide(model_sites: Dict[str, Dict[str, Any]], guide_sites: Dict[str, Dict[str, Any]]) -> None:
        """The guide proposes exactly the model's latent sites, each of its shape and in its support."""
        missing = [name for name in model_sites if name not in guide_sites]
        if missing:
            raise ValueError(f"the guide samples no site {', '.join(map(repr, missing))} of the model's latents; q(z | x) must "
                             "propose every latent site (a site left out would be drawn from the prior and weighed as if "
                             "proposed, a wrong estimate)")
        extra = [name for name in guide_sites if name not in model_sites]
        if extra:
            raise ValueError(f"the guide samples {', '.join(map(repr, extra))}, which the model does not (or observes); the "
                             "importance weight p(x, z) / q(z | x) needs q over the model's latent sites only")
        for name, site in guide_sites.items():
            check_local(site, "guide")
            model_shape, guide_shape = model_sites[name]["value"].shape[1:], site["value"].shape[1:]
            if model_shape != guide_shape:
                raise ValueError(f"latent site {name!r} has shape {tuple(model_shape)} per datapoint in the model and "
                                 f"{tuple(guide_shape)} in the guide; they must agree")
            if not is_real_support(model_sites[name]["fn"].support) and is_real_support(site["fn"].support):
                raise ValueError(f"latent site {name!r} has support {model_sites[name]['fn'].support} in the model but the "
                                 "guide's distribution is over the whole real line; give it a distribution on the same "
                                 "support (LogNormal or Gamma for a positive site, Beta for (0, 1), Dirichlet for the simplex)")

    def _check_broadcasting(self, point: torch.Tensor) -> None:
        """Model and guide run with two particles left of the data plate, as the estimators run them."""
        try:
            traced_pair(self.model, self.guide, point, num_particles=2)
        except Exception as e:  # noqa: BLE001 - whatever fails, the cause is the missing particle dimension
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"the model and guide fail with particles in a plate left of pyro.plate({DATA_PLATE!r}) "
                             f"({type(e).__name__}: {first}); they must broadcast over batch dimensions on the left, "
                             "as for Pyro's vectorize_particles (e.g. `dist.Normal(z.unsqueeze(-1), s).expand(z.shape + "
                             "(3,))`, not `z.expand(-1, 3)`)") from e

    @property
    def z_dim(self) -> int:
        """D: the latent sites' unconstrained sizes per datapoint, added up."""
        if self.sites is None:
            raise ValueError("the latent sites are found at the first estimate; call an estimator first")
        return sum(int(shape.numel()) for shape in self._flat_shapes.values())

    def _split(self, u: torch.Tensor) -> Iterator[Tuple[str, torch.Tensor]]:
        """``(name, u_site)`` for the flat ``u`` ``(..., n, D)``, each ``(..., n, *unconstrained shape)``."""
        start = 0
        for name, shape in self._flat_shapes.items():
            size = int(shape.numel())
            yield name, u[..., start : start + size].reshape(u.shape[:-1] + tuple(shape))
            start += size

    def latents(self, u: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The flat latents ``u`` ``(..., n, D)`` as the model's sites ``{name: T(u_site)}``,
        each ``(..., n, *shape)`` in its support."""
        assert self.sites is not None
        if not self.constrained:
            return dict(self._split(u))
        return {name: self._transforms[name](u_site) for name, u_site in self._split(u)}

    def flat(self, latents: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The sites' values ``{name: (chains, n, *shape)}`` as one ``(chains, n, D)`` tensor ``u``
        (each through ``T^-1``)."""
        assert self.sites is not None
        first_name = next(iter(self.sites))
        first = latents[first_name]
        lead = first.shape[: first.dim() - len(self.sites[first_name])]
        parts = [latents[name] if not self.constrained else self._transforms[name].inv(latents[name]) for name in self.sites]
        return torch.cat([part.reshape(lead + (-1,)) for part in parts], -1)

    def log_abs_det_jacobian(self, u: torch.Tensor) -> torch.Tensor:
        """``sum over sites of log |det dT/du|`` per chain and datapoint, ``(..., n)``: what a density
        over the sites' values gains as a density over ``u`` (zero where every support is real)."""
        total = torch.zeros((), dtype=u.dtype, device=u.device)
        for name, u_site in self._split(u):
            transform = self._transforms[name]
            ladj = transform.log_abs_det_jacobian(u_site, transform(u_site))
            total = total + sum_rightmost(ladj, ladj.dim() - (u.dim() - 1))
        return total

    @contextlib.contextmanager
    def param_store_off(self) -> Iterator["PyroModel"]:
        """The user's program registers its parameters as it likes."""
        yield self

    @torch.no_grad()
    def simulate(self, num_points: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``num_points`` draws (x, u) from the model, for BDMC: the model's one observed site,
        sampled instead of observed (``poutine.uncondition``), read back as data of x's shape, and
        the latents that made it, flat ``(num_points, D)``."""
        if self._template is None:
            raise ValueError("simulating data needs the data's shape: pass x (any points of that shape) to bdmc")
        template = self._template.expand((num_points,) + self._template.shape[1:]).contiguous()
        trace = poutine.trace(poutine.uncondition(self.model)).get_trace(template)
        observed = [trace.nodes[name] for name in self._observed]  # sampled now (unconditioned)
        if len(observed) != 1 or observed[0]["value"].numel() != template.numel():
            raise ValueError("bdmc simulates data from a model with one observed site, whose value is the data x; this "
                             f"model has {len(observed)} observed site(s) of other sizes")
        x = observed[0]["value"].reshape(template.shape).to(template.dtype)
        z = self.flat({name: trace.nodes[name]["value"].unsqueeze(0) for name in self.sites or {}})[0]
        return x, z


def _vae_latents(vae: VAE, z: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {"z": z}


def latents_of(target: Any, u: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The flat latents ``u`` as ``{site: value}`` for ``target``'s model and guide."""
    return target.latents(u) if isinstance(target, PyroModel) else _vae_latents(target, u)


def chain_values(target: Any, u: torch.Tensor) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """What an estimator keeps of its chains ``u`` ``(..., n, D)``: a VAE's draws of z as they are;
    a user's program's as ``{site: value}`` in the sites' own (constrained) values, as Pyro's MCMC
    returns them."""
    return target.latents(u) if isinstance(target, PyroModel) else u


def _at_sampler_points() -> ContextManager[None]:
    """Evaluate a user's program at the samplers' points without the distributions' argument checks.

    A leapfrog trajectory that diverges takes ``u`` to values whose ``T(u)`` overflows to the
    support's boundary (``exp(u)`` is inf or 0) or to NaN. The checks would raise there; without
    them the density is not finite, which the HMC kernel rejects as a divergence. (The program's
    first trace, at the first estimate, runs with the checks as the user set them.)"""
    return pyro.validation_enabled(False)


def flat_log_densities(target: Any, u: torch.Tensor, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(log p(u), log p(x | u))`` per chain and datapoint at flat latents ``u`` ``(chains, n, D)``:
    the prior as a density over ``u`` (with ``log |det dT/du|``), so that their sum is the log
    joint the samplers move on; the likelihood is the same in either coordinates."""
    if not isinstance(target, PyroModel):
        return log_densities(target.model, latents_of(target, u), x)
    with _at_sampler_points():
        log_prior, log_lik = log_densities(target.model, target.latents(u), x)
    return (log_prior + target.log_abs_det_jacobian(u) if target.constrained else log_prior), log_lik


def flat_guide_log_prob(target: Any, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log q(u | x)`` per chain and datapoint, a density over ``u`` as :func:`flat_log_densities`."""
    if not isinstance(target, PyroModel):
        return guide_log_prob(target.guide, latents_of(target, u), x)
    with _at_sampler_points():
        log_q = guide_log_prob(target.guide, target.latents(u), x)
    return log_q + target.log_abs_det_jacobian(u) if target.constrained else log_q


def sample_flat(target: Any, program: Callable[..., Any], num_samples: int, x: torch.Tensor) -> torch.Tensor:
    """Draws of ``program``'s latent sites (the model: from the prior; the guide: from q), as one
    ``(num_samples, n, D)`` tensor ``u``."""
    drawn = sample_latents(program, num_samples, x)
    return target.flat(drawn) if isinstance(target, PyroModel) else drawn["z"]


def accepts_pyro_programs(estimator: F) -> F:
    """Let an estimator take ``(model, guide, x, ...)`` of a user's own as well as ``(vae, x, ...)``."""

    @functools.wraps(estimator)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(model, (VAE, PyroModel)):
            if not callable(model) or not args or not callable(args[0]) or torch.is_tensor(args[0]):
                raise TypeError(f"{estimator.__name__} takes a trained VAE and x, or a Pyro model(x), its guide(x) and x")
            model, args = PyroModel(model, args[0]), args[1:]
        return estimator(model, *args, **kwargs)

    wrapper.takes_pyro_programs = True  # type: ignore[attr-defined]  # (model.OWN_PROGRAM_ESTIMATORS names them)
    return wrapper  # type: ignore[return-value]
