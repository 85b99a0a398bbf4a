"""The VAE as a Pyro model and guide (Kingma & Welling 2013, AEVB).

Generative model, for datapoints n = 1..N::

    z_n ~ p(z)                      (prior from the registry)
    x_n ~ p(x | decoder(z_n))       (likelihood from the registry)

Guide (amortized inference network)::

    z_n ~ q(z | encoder(x_n))      (guide from the registry)

Both run inside ``pyro.plate("data", N, subsample=idx)`` so that a minibatch of M points is scaled
by N/M and its ELBO is an unbiased estimate of the full-data ELBO (AEVB Sec. 2.3, estimator (8)).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import nn

from pyro_vae.components.distributions import is_real_support
from pyro_vae.components.guides import Guide
from pyro_vae.components.likelihoods import Likelihood
from pyro_vae.components.priors import Prior
from pyro_vae.components.registry import GUIDES, LIKELIHOODS, NETWORKS, PRIORS
from pyro_vae.errors import ConfigError
from pyro_vae.traces import DATA_PLATE, check_finite_rows
from pyro_vae.user_numbers import count


class VAE(nn.Module):
    """Holds every parameter of the model and guide; ``model`` and ``guide`` are Pyro programs.

    Shapes: ``x`` is ``(batch, x_dim)`` (images flattened), ``z`` is ``(..., batch, z_dim)``.
    """

    def __init__(
        self,
        x_shape: Tuple[int, ...],
        z_dim: int,
        prior: Prior,
        likelihood: Likelihood,
        guide_head: Guide,
        encoder: nn.Module,
        decoder: nn.Module,
    ) -> None:
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.z_dim = z_dim
        self.prior = prior
        self.likelihood = likelihood
        self.guide_head = guide_head
        self.encoder = encoder
        self.decoder = decoder
        # Register parameters with Pyro's param store (needed by Pyro's SVI and the JIT ELBOs). The
        # trainer turns it off for objectives that do not need it, since its own optimizer holds
        # the parameters (a cost at every step, and no stale param-store state).
        self.register_params = True
        # Views for registration with Pyro (no parameters of their own; state_dict keys unchanged).
        object.__setattr__(self, "generative", nn.ModuleDict({"prior": prior, "likelihood": likelihood, "decoder": decoder}))
        object.__setattr__(self, "recognition", nn.ModuleDict({"guide_head": guide_head, "encoder": encoder}))

    @property
    def x_dim(self) -> int:
        return self.likelihood.x_dim

    @property
    def latent_dtype(self) -> torch.dtype:
        """The dtype of z: the parameters' (and x's, which :meth:`check_points` holds to it)."""
        return next(self.parameters()).dtype

    @property
    def image_shape(self) -> Optional[Tuple[int, int, int]]:
        """``(channels, height, width)`` when a datapoint is an image: grey ``(h, w)`` or
        ``(1, h, w)``, colour ``(3, h, w)``; None for other data (plain vectors)."""
        shape = self.x_shape
        if len(shape) == 2:
            return (1,) + shape  # type: ignore[return-value]
        if len(shape) == 3 and shape[0] in (1, 3):
            return shape  # type: ignore[return-value]
        return None

    def check_points(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` holds datapoints as this model takes them: a floating-point
        tensor of shape ``(n, x_dim)`` with n >= 1 and finite values, on the model's device and in its
        dtype (the estimators' entry check: a wrong shape would otherwise fail deep inside a Pyro
        trace, and a NaN would make the estimate NaN)."""
        if not torch.is_tensor(x):
            raise ValueError(f"x must be a torch tensor of shape (n, {self.x_dim}), got a {type(x).__module__}.{type(x).__name__}; "
                             "torch.as_tensor(x, dtype=torch.float32) makes one")
        if x.dim() != 2 or x.shape[1] != self.x_dim or x.shape[0] < 1:
            raise ValueError(f"x must have shape (n, {self.x_dim}) with n >= 1 (one flattened datapoint per row), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point (the data as the model saw it in training), got {x.dtype}")
        first = next(self.parameters())
        if x.device != first.device:
            raise ValueError(f"x is on {x.device} but the model on {first.device}; move one of them (x.to({str(first.device)!r}))")
        if x.dtype != first.dtype:
            raise ValueError(f"x is {x.dtype} but the model's parameters are {first.dtype}; convert one of them "
                             f"(x.to({first.dtype}), or vae.to({x.dtype}))")
        check_finite_rows(x)  # before any chunk

    # --- distributions -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x), batch shape ``x.shape[:-1]``."""
        return self.guide_head(self.encoder(x))

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z), batch shape ``z.shape[:-1]``."""
        return self.likelihood(self.decoder(z))

    def prior_dist(self) -> dist.Distribution:
        """p(z) with batch shape ``()``."""
        return self.prior(self.encode)

    # --- Pyro programs -------------------------------------------------------------------------
    def _plate(self, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: Optional[int]) -> pyro.plate:
        # The device is passed because Pyro's plate otherwise finds the default one by making an
        # empty tensor, at every call (about 4 us of the 10 a plate costs, twice per training step),
        # and would put a plate's own indices on the CPU for data on a GPU.
        if num_data is None:
            return pyro.plate(DATA_PLATE, x.shape[0], dim=-1, device=x.device)
        if idx is None:
            idx = torch.arange(x.shape[0], device=x.device)
        return pyro.plate(DATA_PLATE, num_data, subsample=idx, dim=-1, device=x.device)

    def model(self, x: torch.Tensor, idx: Optional[torch.Tensor] = None, num_data: Optional[int] = None) -> torch.Tensor:
        """p(x, z). ``num_data`` is N (the full data set) and ``idx`` the minibatch's indices."""
        # Each parameter is registered once per step: generative ones here, recognition ones in
        # the guide (Pyro's SVI collects parameters from both traces). Registering the whole VAE in
        # both doubled pyro.module's cost, the largest Python overhead of a step.
        if self.register_params:
            pyro.module("vae.generative", self.generative)
        with self._plate(x, idx, num_data):
            z = pyro.sample("z", self.prior_dist())
            pyro.sample("x", self.decode(z), obs=self.likelihood.prepare(x))
        return z

    def guide(self, x: torch.Tensor, idx: Optional[torch.Tensor] = None, num_data: Optional[int] = None) -> torch.Tensor:
        """q(z | x)."""
        if self.register_params:
            pyro.module("vae.recognition", self.recognition)
        with self._plate(x, idx, num_data):
            return pyro.sample("z", self.encode(x))

    @contextmanager
    def param_store_off(self) -> Iterator["VAE"]:
        """Run ``model`` and ``guide`` without registering parameters with Pyro's param store.

        Estimators and evaluations use the modules' parameters directly and never need the store;
        ``pyro.module`` walks every parameter at every call, a large part of the fixed cost of an
        HMC potential evaluation."""
        saved = self.register_params
        self.register_params = False
        try:
            yield self
        finally:
            self.register_params = saved

    @torch.no_grad()
    def simulate(self, num_points: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x, z) from the model: z ~ p(z), x ~ p(x|z); z is an exact posterior sample for x.
        Used for wake-sleep's dreams and for BDMC."""
        p0 = next(self.parameters())
        dummy = torch.zeros(num_points, self.x_dim, device=p0.device, dtype=p0.dtype)
        trace = poutine.trace(poutine.uncondition(self.model)).get_trace(dummy)
        return trace.nodes["x"]["value"], trace.nodes["z"]["value"]

    # --- helpers for pictures ------------------------------------------------------------------
    @torch.no_grad()
    def sample_means(self, n: int) -> torch.Tensor:
        """E[x | z] for n draws z ~ p(z) (torch's random state), shape ``(n, x_dim)``."""
        n = count("n (the number of draws)", n, 0)
        z = self.prior_dist().sample((n,))
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def decode_means(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z] at z = the mean of q(z|x) (a sample for guides without a closed-form mean)."""
        q = self.encode(x)
        try:
            z = q.mean
        except NotImplementedError:
            z = q.sample()
        return self.decode_means(z)


EstimatorFn = TypeVar("EstimatorFn", bound=Callable[..., Any])


OWN_PROGRAM_ESTIMATORS = "iwae, elbo, ais, bdmc, hmc_marginal_likelihood, gap_report, optimise_local_gaussians and active_units"  # the ones that also take (model, guide, x)


def without_param_store(fn: EstimatorFn) -> EstimatorFn:
    """Decorator for estimators ``fn(vae, ...)``: the call runs inside ``vae.param_store_off()``."""

    @functools.wraps(fn)
    def wrapper(vae: VAE, *args: Any, **kwargs: Any) -> Any:
        if not hasattr(vae, "param_store_off"):  # neither a VAE nor a program the estimator has wrapped
            raise TypeError(f"{fn.__name__} takes a trained pyro-vae VAE (load_run(folder).vae), got {type(vae).__name__}; "
                            f"on a Pyro model of your own, {OWN_PROGRAM_ESTIMATORS} take (model, guide, x)")
        with vae.param_store_off():
            return fn(vae, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


Component = Dict[str, Any]  # a registry entry as a config writes it: {"name": "mlp", "hidden": [500]}


def build_vae(
    x_shape: Tuple[int, ...],
    z_dim: int,
    prior: Component,
    likelihood: Component,
    guide: Component,
    encoder: Component,
    decoder: Component,
) -> VAE:
    """Build a VAE for data of shape ``x_shape`` from registry entries, each written as in a
    config's ``model:`` section (``{"name": "vamp", "components": 500}``)."""
    x_dim = 1
    for s in x_shape:
        x_dim *= int(s)

    def build(registry: Any, component: Component, base: type, **context: Any) -> Any:
        options = dict(component)
        return registry.build(options.pop("name"), options, returns=base, **context)

    prior_module = build(PRIORS, prior, Prior, z_dim=z_dim, x_dim=x_dim)
    likelihood_module = build(LIKELIHOODS, likelihood, Likelihood, x_dim=x_dim)
    guide_head = build(GUIDES, guide, Guide, z_dim=z_dim)
    encoder_net = build(NETWORKS, encoder, nn.Module, in_dim=x_dim, out_dim=guide_head.num_outputs(), x_shape=x_shape, role="encoder")
    decoder_net = build(NETWORKS, decoder, nn.Module, in_dim=z_dim, out_dim=likelihood_module.num_outputs(), x_shape=x_shape,
                        role="decoder")
    vae = VAE(x_shape, z_dim, prior_module, likelihood_module, guide_head, encoder_net, decoder_net)
    _check_components(vae, {part: component["name"] for part, component in
                            (("prior", prior), ("likelihood", likelihood), ("guide", guide), ("encoder", encoder), ("decoder", decoder))})
    return vae


def _check_components(vae: VAE, names: Dict[str, str]) -> None:
    """Run each component once on two dummy points and check what it returns, so that a component
    of one's own with a wrong shape or support is refused when it is built, with its name, not
    met as a broadcasting error inside a Pyro trace at the first step.

    Shapes: the encoder maps ``(2, x_dim)`` to ``(2, guide.num_outputs())`` and the guide that to
    q(z | x) with batch ``(2,)`` and event ``(z_dim,)``; the prior is p(z) with batch ``()`` and
    event ``(z_dim,)``; the decoder maps ``(2, z_dim)`` to ``(2, likelihood.num_outputs())`` and
    the likelihood that to p(x | z) with batch ``(2,)`` and event ``(x_dim,)``.

    z lives on all of R^D: the shipped guides are Gaussians and flows there, and AIS, BDMC, App. D
    and MCEM move z there."""

    def run(part: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - a component of one's own: whatever it raises is named with it
            first = (str(e).strip().splitlines() or [""])[0]
            raise ConfigError(f"{part} {names[part]!r} fails when pyro-vae first runs it: {type(e).__name__}: {first}") from e

    def check_output(part: str, out: Any, width: int, what: str) -> None:
        if not torch.is_tensor(out) or tuple(out.shape) != (2, width):
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ConfigError(f"{part} {names[part]!r} maps two points to {got}; {what} needs (2, {width})")

    def check_distribution(part: str, d: Any, batch: Tuple[int, ...], event: Tuple[int, ...], of: str) -> None:
        if not isinstance(d, torch.distributions.Distribution):
            raise ConfigError(f"{part} {names[part]!r} returns a {type(d).__name__}, not a distribution over {of}")
        if tuple(d.batch_shape) != batch or tuple(d.event_shape) != event:
            raise ConfigError(f"{part} {names[part]!r} gives a distribution with batch shape {tuple(d.batch_shape)} and event shape "
                              f"{tuple(d.event_shape)}; {of} needs batch {batch} and event {event} (.to_event(1) makes the "
                              "last dimension an event)")
        if of == "z" and not is_real_support(d.support):
            raise ConfigError(f"{part} {names[part]!r} puts z on {d.support}, but pyro-vae's z lives on all of R^D (its guides are "
                              f"Gaussians and flows there, and AIS, BDMC, App. D and MCEM move z there); sample the "
                              f"latent on R^D (log z for a positive one) and let the decoder map it to the support")

    param = next(vae.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(2, vae.x_dim, device=device)
    z = torch.zeros(2, vae.z_dim, device=device)
    with torch.no_grad():
        raw = run("encoder", lambda: vae.encoder(x))
        check_output("encoder", raw, vae.guide_head.num_outputs(), f"guide {names['guide']!r}")
        check_distribution("guide", run("guide", lambda: vae.guide_head(raw)), (2,), (vae.z_dim,), "z")
        check_distribution("prior", run("prior", vae.prior_dist), (), (vae.z_dim,), "z")
        raw = run("decoder", lambda: vae.decoder(z))
        check_output("decoder", raw, vae.likelihood.num_outputs(), f"likelihood {names['likelihood']!r}")
        check_distribution("likelihood", run("likelihood", lambda: vae.likelihood(raw)), (2,), (vae.x_dim,), "x")


def set_validation(enabled: bool) -> None:
    """Distribution argument checks: useful for debugging, a measurable cost per step."""
    pyro.enable_validation(enabled)
    torch.distributions.Distribution.set_default_validate_args(enabled)
