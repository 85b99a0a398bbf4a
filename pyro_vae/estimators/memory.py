"""How much memory one importance-sampling particle takes, measured on the model itself.

IWAE and the ELBO score particles in chunks sized to a memory budget (``iwae.plan_chunks``). The
size of a particle is whatever the prior, guide, decoder and likelihood allocate for it inside the
Pyro traces, which no single module can say: a VampPrior with K pseudo-inputs scores each z against
K Gaussians, a (particles, datapoints, K, z_dim) tensor: with K = 500 on the paper's networks a
particle takes 83 kB, 13 times the 6.4 kB of the same model with a standard-normal prior. So it is
measured: ``live_bytes_peak`` runs a function under a torch
dispatch mode that counts the bytes of every storage an operation creates while any tensor still
holds it, and keeps the largest total; the cost of a particle is the slope of that peak between
two particle counts (what every chunk pays once, such as the pseudo-inputs' encoding, cancels).
``bytes_per_chain`` does the same for an HMC chain: the potential -log p(x, z) and its gradient,
which keeps the forward pass's activations for the backward one (1.8-2.5x a particle's bytes).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pyro_vae.model import VAE
from pyro_vae.programs import flat_log_densities
from pyro_vae.traces import log_importance_weights
from pyro_vae.mcmc.hmc import potential_and_grad
from pyro_vae.estimators.options import memory_budget


class _LiveBytes(TorchDispatchMode):
    """Counts the storages made by operations run under it: bytes held now and the most held at once.

    A storage counts from the first tensor an operation returns on it (a view or an in-place
    result shares its base's) until the last such tensor is freed. Storages made before the mode
    started (parameters, the data) are not counted, nor are views of them."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._holders: Dict[int, int] = {}  # storage address -> tensors that hold it

    def _release(self, address: int, nbytes: int) -> None:
        self._holders[address] -= 1
        if self._holders[address] == 0:
            del self._holders[address]
            self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {_address(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            address = _address(t)
            if address == 0:  # an empty tensor, or one without a plain storage
                continue
            if address not in self._holders:
                if address in inputs:  # a view of, or in-place result on, memory made before (a weight's .t())
                    continue
                self._holders[address] = 0
                self.live += t.untyped_storage().nbytes()
                self.peak = max(self.peak, self.live)
            self._holders[address] += 1
            weakref.finalize(t, self._release, address, t.untyped_storage().nbytes())
        return out


def _address(t: torch.Tensor) -> int:
    """Where the tensor's memory starts; 0 (not counted) for an empty one or one without a plain
    storage (a sparse tensor, say: it is not among what the estimators make)."""
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return 0


def live_bytes_peak(fn: Callable[[], Any]) -> int:
    """The most bytes that tensors made inside ``fn()`` held at one time (its result included).

    A tensor counts until its object is freed, and torch keeps a tensor's Python object alive while
    its C++ side is referenced, so an activation that autograd saves for the backward pass counts
    until that pass has used it, though the forward code dropped it long before (tested)."""
    with _LiveBytes() as counter:
        result = fn()
        del result
    return counter.peak


# Particle counts of the two measurements: small enough to cost milliseconds, large enough that
# the particles' tensors set both peaks (at 8 particles of the paper's model the peak still fell
# where the encoder's fixed-size work was, and the slope read 4.4 kB instead of 6.4 kB).
_FEW, _MORE = 32, 96


@torch.no_grad()
def bytes_per_particle(vae: VAE, x: torch.Tensor) -> int:
    """Working memory of one (particle, datapoint) pair of ``log_importance_weights``: the slope of
    its peak live bytes from ``_FEW`` to ``_MORE`` particles of the first datapoint of ``x``, with
    the layers as the estimators run them (fused where they fuse). Torch's random state is restored
    afterwards, so measuring leaves the estimate's draws as they would be without it."""
    point = x[:1]
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), vae.param_store_off():
        log_importance_weights(vae.model, vae.guide, point, num_particles=2)  # one-time work (probes, caches) first
        few = live_bytes_peak(lambda: log_importance_weights(vae.model, vae.guide, point, num_particles=_FEW))
        more = live_bytes_peak(lambda: log_importance_weights(vae.model, vae.guide, point, num_particles=_MORE))
    return max(4 * vae.x_dim, -(-(more - few) // (_MORE - _FEW)))  # at least the likelihood's x-sized values


@torch.no_grad()
def bytes_per_chain(vae: VAE, x: torch.Tensor) -> int:
    """Working memory of one HMC chain of one datapoint (AIS, the App. D estimator): the slope of the
    peak live bytes of the potential ``-log p(x, z)`` and its gradient with respect to z, from
    ``_FEW`` to ``_MORE`` chains of the first datapoint of ``x``. Draws nothing from torch's random
    state."""
    point = x[:1]

    def potential(z: torch.Tensor) -> torch.Tensor:
        # Through Pyro's traces, not a graph compiled per shape (``potentials``): compiling two
        # shapes only to measure them costs seconds, and the eager pass holds as much memory or more.
        log_prior, log_lik = flat_log_densities(vae, z, point)
        return -(log_prior + log_lik)

    peaks = []
    with vae.param_store_off():
        potential_and_grad(potential, torch.zeros(2, 1, vae.z_dim, device=x.device, dtype=vae.latent_dtype))  # one-time work first
        for chains in (_FEW, _MORE):
            z = torch.zeros(chains, 1, vae.z_dim, device=x.device, dtype=vae.latent_dtype)
            peaks.append(live_bytes_peak(lambda: potential_and_grad(potential, z)))
    return max(4 * vae.x_dim, -(-(peaks[1] - peaks[0]) // (_MORE - _FEW)))


def datapoints_per_chunk(n: int, bytes_per_point: int, memory_gb: Optional[float], device: torch.device = torch.device("cpu")) -> int:
    """How many of ``n`` datapoints, each taking ``bytes_per_point``, one chunk under ``memory_gb``
    holds (at least one): for the estimators whose datapoints never interact (AIS, BDMC, App. D,
    the gap report's local Gaussians)."""
    return max(1, min(n, memory_budget(memory_gb, device, "one chunk of datapoints") // max(1, bytes_per_point)))
