"""Any Pyro model and guide as the estimators read them.

The estimators reach a model only through Pyro traces (:mod:`pyro_vae.traces`), so they need of it
what this wrapper gives: ``model(x)`` and ``guide(x)``, the datapoints in ``pyro.plate("data", n)``
(the innermost plate, ``dim=-1``), and continuous latent sample sites whose shape beyond that plate
is their event shape (``dist.Normal(loc, scale).to_event(1)``). The latent sites are seen by the
samplers as one flat vector per datapoint, ``z`` of shape ``(chains, n, D)``, ``D`` the sum of the
sites' sizes, in the order the model samples them. A trained :class:`~pyro_vae.model.VAE` offers
the same interface with its one site ``z``.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar

import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample
import torch

from pyro_vae.model import VAE
from pyro_vae.traces import DATA_PLATE, sample_latents

F = TypeVar("F", bound=Callable[..., Any])


class PyroModel:
    """``model(x)`` and ``guide(x)`` of a user's own, for :func:`~pyro_vae.estimators.iwae`,
    :func:`~pyro_vae.estimators.ais`, :func:`~pyro_vae.estimators.bdmc` and
    :func:`~pyro_vae.estimators.hmc_marginal_likelihood`. The latent sites are found by running the
    model once on the first datapoint, at the first estimate.

    :param guide: ``guide(x)``, a distribution q(z | x) over the same latent sites; IWAE draws from
        it, AIS from it with ``start="encoder"``, and the App. D estimator starts its chains there.
    """

    def __init__(self, model: Callable[..., Any], guide: Callable[..., Any]) -> None:
        self.model, self.guide = model, guide
        self.sites: Optional[Dict[str, torch.Size]] = None  # name -> shape per datapoint
        self.x_dim: int = 0
        self._template: Optional[torch.Tensor] = None  # one datapoint, for simulated data of its shape
        self._observed: list = []  # the model's observed sites

    def check_points(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` holds n >= 1 datapoints along its first dimension;
        find the model's latent sites on the first."""
        if not torch.is_tensor(x) or x.dim() < 1 or x.shape[0] < 1:
            raise ValueError(f"x must be a tensor of n >= 1 datapoints along its first dimension, got {getattr(x, 'shape', x)!r}")
        if self.sites is None:
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
                trace = poutine.trace(self.model).get_trace(x[:1])
            self.sites = {}
            self._observed = [name for name, site in trace.nodes.items() if site["type"] == "sample" and site["is_observed"]]
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                    continue
                if site["fn"].support.is_discrete:
                    raise ValueError(f"latent site {name!r} is discrete; the estimators need continuous latents "
                                     "(enumerate or marginalise discrete ones in the model)")
                if not any(frame.name == DATA_PLATE for frame in site["cond_indep_stack"]):
                    raise ValueError(f"latent site {name!r} is outside pyro.plate({DATA_PLATE!r}): the estimators score "
                                     "log p(x) per datapoint, so every latent site must be a datapoint's own")
                self.sites[name] = site["value"].shape[1:]
            if not self.sites:
                raise ValueError("the model has no latent sample sites inside pyro.plate('data'); nothing to integrate out")
            self.x_dim = int(x[0].numel())
            self._template = x[:1].detach()

    @property
    def z_dim(self) -> int:
        """D: the latent sites' sizes per datapoint, added up."""
        if self.sites is None:
            raise ValueError("the latent sites are found at the first estimate; call an estimator first")
        return sum(int(torch.Size(shape).numel()) for shape in self.sites.values())

    def latents(self, z: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The flat latents ``(..., n, D)`` as the model's sites ``{name: (..., n, *shape)}``."""
        assert self.sites is not None
        out, start = {}, 0
        for name, shape in self.sites.items():
            size = int(torch.Size(shape).numel())
            out[name] = z[..., start : start + size].reshape(z.shape[:-1] + tuple(shape))
            start += size
        return out

    def flat(self, latents: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The sites' values ``{name: (chains, n, *shape)}`` as one ``(chains, n, D)`` tensor."""
        assert self.sites is not None
        first = latents[next(iter(self.sites))]
        lead = first.shape[: first.dim() - len(self.sites[next(iter(self.sites))])]
        return torch.cat([latents[name].reshape(lead + (-1,)) for name in self.sites], -1)

    @contextlib.contextmanager
    def param_store_off(self) -> Iterator["PyroModel"]:
        """The user's program registers its parameters as it likes."""
        yield self

    @torch.no_grad()
    def simulate(self, num_points: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``num_points`` draws (x, z) from the model, for BDMC: the model's one observed site,
        sampled instead of observed (``poutine.uncondition``), read back as data of x's shape."""
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


def latents_of(target: Any, z: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The flat latents ``z`` as ``{site: value}`` for ``target``'s model and guide."""
    return target.latents(z) if isinstance(target, PyroModel) else _vae_latents(target, z)


def sample_flat(target: Any, program: Callable[..., Any], num_samples: int, x: torch.Tensor) -> torch.Tensor:
    """Draws of ``program``'s latent sites (the model: from the prior; the guide: from q), as one
    ``(num_samples, n, D)`` tensor."""
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

    return wrapper  # type: ignore[return-value]
