"""Log densities for HMC potentials, compiled once per shape where that is faster.

The batched HMC kernel of AIS, the AEVB App. D estimator and MCEM's E-step evaluates

    U(z) = -[log p(z) + log p(x | z)]        (AIS also: -log q(z | x))

and dU/dz ``num_leapfrog`` times per transition, always for the same data batch and shapes, and
with the networks' parameters held fixed. The densities come from Pyro traces of the model and
guide (:func:`pyro_vae.traces.log_densities`, :func:`~pyro_vae.traces.guide_log_prob`), so every
registry entry works; for a user's own program, as densities over its flat unconstrained latents
(:func:`pyro_vae.programs.flat_log_densities`). Run eagerly, a trace costs Python work per evaluation (Pyro's messengers,
plates, distribution objects) that for a hundred chains is as much as the arithmetic.

So these functions record the traced computation once per input shape with ``torch.jit.trace`` and
replay the recorded graph afterwards. The parameters and buffers of the VAE enter the graph as
inputs, not as constants: detached views, taken when a density function is made (once per
estimator call or E-step) and sharing storage with the parameters, so the graph computes with
their current values (an M-step's in-place update shows through) and records no parameter
gradient (only dU/dz is ever needed here). ``benchmarks/bench_hmc.py`` compares the result with a
hand-written potential.

When compiling is used (``compiles``):

* on CPU, where oneDNN's fused layers would *not* run (fewer than
  ``fused_linear.MIN_ROWS_WITH_GRAD`` chains x datapoints, or the fused layers switched off):
  a compiled graph runs torch's layers one by one, and from about 1000 rows of a 500-unit network
  the eager, fused layers are faster than the compiled, plain ones;
* not with Pyro's validation switched on (its argument checks are Python branches on values),
  and not on CUDA;
* ``PYRO_VAE_COMPILE_POTENTIALS=0`` switches it off.

Safety: a trace records the operations run at one point, so a density whose Python code branches
on the *values* of z (not on shapes) cannot be compiled. The first call of each shape is checked
against the eager computation, values and dU/dz, at the traced point and at a second one; if they
differ, or tracing fails, that shape stays eager and a warning says why. Every prior, likelihood
and guide of the registry compiles (tested); a new one with such branches should be tested the
same way, or run with ``PYRO_VAE_COMPILE_POTENTIALS=0``.
"""

from __future__ import annotations

import warnings
import weakref
from contextlib import contextmanager
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Tuple

import torch
from pyro.infer.util import is_validation_enabled

from pyro_vae.speed import fused_linear
from pyro_vae.model import VAE
from pyro_vae.programs import flat_guide_log_prob, flat_log_densities
from pyro_vae.speed.switches import Switch
from pyro_vae.errors import warn

Densities = Tuple[torch.Tensor, ...]
DensityFn = Callable[[VAE, torch.Tensor, torch.Tensor], Densities]

# PYRO_VAE_COMPILE_POTENTIALS=0, or ``switched_on.value = False``, keeps every potential eager.
# Read at first use (the CLI checks it before any work).
switched_on = Switch(
    "PYRO_VAE_COMPILE_POTENTIALS", on="HMC potentials compiled per shape where faster",
    off="every potential evaluated eagerly through Pyro's traces",
)


def compiles(z: torch.Tensor) -> bool:
    """Whether a potential evaluated at latents ``z`` (chains, batch, D) runs compiled."""
    if not switched_on() or z.device.type != "cpu" or is_validation_enabled():
        return False
    with torch.enable_grad():  # the question is asked for the leapfrog's dU/dz
        return not fused_linear.applies(z.detach().requires_grad_(True))


def _model_densities(vae: VAE, z: torch.Tensor, x: torch.Tensor) -> Densities:
    return flat_log_densities(vae, z, x)


def _guide_density(vae: VAE, z: torch.Tensor, x: torch.Tensor) -> Densities:
    return (flat_guide_log_prob(vae, z, x),)


@contextmanager
def _substituted(vae: VAE, names: List[str], tensors: Tuple[torch.Tensor, ...]) -> Iterator[None]:
    """Inside, the VAE's parameters and buffers ``names`` are the given tensors (graph inputs while
    tracing). ``torch.func.functional_call`` does this too but refuses to run under the tracer."""
    saved = []
    for name, tensor in zip(names, tensors):
        owner_name, _, attr = name.rpartition(".")
        owner = vae.get_submodule(owner_name)
        store = owner._parameters if attr in owner._parameters else owner._buffers
        saved.append((store, attr, store[attr]))
        store[attr] = tensor
    try:
        yield
    finally:
        for store, attr, original in reversed(saved):
            store[attr] = original


# Per VAE (weakly held, so a VAE's graphs go with it): compiled graph per (density, shapes), or
# None where that shape stays eager.
_GRAPHS: "weakref.WeakKeyDictionary[VAE, Dict[Hashable, Optional[torch.jit.ScriptFunction]]]" = weakref.WeakKeyDictionary()


def _state(vae: VAE) -> Tuple[List[str], List[torch.Tensor]]:
    """Names and current values (detached) of the VAE's parameters and buffers."""
    names, tensors = [], []
    for name, t in vae.named_parameters():
        names.append(name)
        tensors.append(t.detach())
    for name, t in vae.named_buffers():
        names.append(name)
        tensors.append(t)
    return names, tensors


def _eager_with_grad(vae: VAE, fn: DensityFn, z: torch.Tensor, x: torch.Tensor) -> Tuple[Densities, torch.Tensor]:
    with torch.enable_grad(), fused_linear.input_gradients_only():
        zz = z.detach().requires_grad_(True)
        out = fn(vae, zz, x)
        (grad,) = torch.autograd.grad(sum(o.sum() for o in out), zz)
    return tuple(o.detach() for o in out), grad


def _compile(
    vae: VAE, fn: DensityFn, z: torch.Tensor, x: torch.Tensor, names: List[str], state: List[torch.Tensor]
) -> Optional[torch.jit.ScriptFunction]:
    """Trace ``fn`` at (z, x) and check it against the eager computation; None (and a warning)
    where it cannot be trusted."""

    # torch keeps the traced Python function alive with its graph, so it holds the VAE weakly:
    # the VAE (and with it its graphs) can then be freed.
    vae_ref = weakref.ref(vae)

    def graph(zz: torch.Tensor, xx: torch.Tensor, *tensors: torch.Tensor) -> Densities:
        traced_vae = vae_ref()
        assert traced_vae is not None  # it is tracing, so it is alive
        with _substituted(traced_vae, names, tensors):
            return fn(traced_vae, zz, xx)

    try:
        with warnings.catch_warnings(), torch.enable_grad():
            # torch >= 2.9 marks torch.jit.trace deprecated at every call, and the tracer warns about
            # every shape comparison; users cannot act on either. The results are checked instead.
            warnings.simplefilter("ignore")
            compiled = torch.jit.trace(graph, (z.detach().requires_grad_(True), x, *state), check_trace=False)
        # Checked at the traced point and at a second one drawn from a private generator (the
        # global random stream, and so the chains, stay as they would be without compiling).
        other = torch.randn(z.shape, generator=torch.Generator(device=z.device).manual_seed(0), device=z.device, dtype=z.dtype)
        for point in (z, other):
            if not _agrees(compiled, vae, fn, point, x, state):
                raise ValueError("the compiled densities differ from the eager ones (Python control flow on the values of z?)")
        return compiled
    except Exception as e:  # noqa: BLE001 - any failure means: evaluate eagerly, as before
        warn(f"pyro-vae: HMC potential for latents of shape {tuple(z.shape)} stays eager (uncompiled, slower): {e}. "
             "Set PYRO_VAE_COMPILE_POTENTIALS=0 to skip compiling altogether.", RuntimeWarning)
        return None


def _agrees(
    compiled: torch.jit.ScriptFunction, vae: VAE, fn: DensityFn, z: torch.Tensor, x: torch.Tensor, state: List[torch.Tensor]
) -> bool:
    """Whether the compiled graph gives the eager values and dU/dz at ``z``."""
    reference, reference_grad = _eager_with_grad(vae, fn, z, x)
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        out = compiled(zz, x, *state)
        out = out if isinstance(out, tuple) else (out,)
        (grad,) = torch.autograd.grad(sum(o.sum() for o in out), zz)
    values_agree = len(out) == len(reference) and all(
        a.shape == b.shape and torch.allclose(a.detach(), b, rtol=1e-4, atol=1e-4) for a, b in zip(out, reference)
    )
    return values_agree and torch.allclose(grad, reference_grad, rtol=1e-3, atol=1e-4)


class _Density:
    """``z -> fn(vae, z, x)`` for one data batch: compiled per shape where ``compiles`` says so.
    The parameters are read when it is made (detached views: in-place updates show through),
    which is once per estimator call or E-step, while they are held fixed."""

    def __init__(self, vae: VAE, fn: DensityFn, x: torch.Tensor) -> None:
        self.vae, self.fn, self.x = vae, fn, x
        self.names, self.state = _state(vae) if isinstance(vae, VAE) else ([], [])
        self.graphs = _GRAPHS.setdefault(vae, {}) if isinstance(vae, VAE) else {}
        self._key = (fn, tuple(self.names), tuple(x.shape), x.dtype)  # the part fixed per batch
        # z's (shape, dtype, device) -> its graph, or None where it runs eagerly: decided at the
        # first evaluation of each shape (``compiles`` costs about 15 us, 2% of an evaluation at
        # 100 chains, and HMC asks it num_leapfrog times per transition)
        self._by_shape: Dict[Hashable, Optional[torch.jit.ScriptFunction]] = {}

    def _graph(self, z: torch.Tensor) -> Optional[torch.jit.ScriptFunction]:
        if not compiles(z) or not isinstance(self.vae, VAE):  # a user's own program runs as it is
            return None
        key = self._key + (tuple(z.shape), z.dtype, z.device)
        if key not in self.graphs:
            with self.vae.param_store_off():  # tracing and checking leave Pyro's param store alone
                self.graphs[key] = _compile(self.vae, self.fn, z, self.x, self.names, self.state)
        return self.graphs[key]

    def __call__(self, z: torch.Tensor) -> Densities:
        vae, fn, x = self.vae, self.fn, self.x
        if is_validation_enabled() or not switched_on():  # either may change between calls
            return fn(vae, z, x)
        shape = (z.shape, z.dtype, z.device)
        try:
            compiled = self._by_shape[shape]
        except KeyError:
            compiled = self._by_shape[shape] = self._graph(z)
        if compiled is None:
            return fn(vae, z, x)
        out = compiled(z, x, *self.state)
        return out if isinstance(out, tuple) else (out,)


def model_log_densities(vae: VAE, x: torch.Tensor) -> Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]:
    """``z -> (log p(z), log p(x | z))`` per chain and datapoint, z of shape (chains, batch, D),
    for potentials differentiated with respect to z only (the parameters are constants here)."""
    density = _Density(vae, _model_densities, x)

    def densities(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        log_prior, log_lik = density(z)
        return log_prior, log_lik

    return densities


def guide_log_density(vae: VAE, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> log q(z | x)`` per chain and datapoint, as :func:`model_log_densities`."""
    density = _Density(vae, _guide_density, x)
    return lambda z: density(z)[0]
