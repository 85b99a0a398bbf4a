"""Training objectives. Each returns a differentiable loss whose expectation is the negative
full-data objective (minibatch terms scaled by N/M), so one optimizer step is an SGVB step.

Registered names: ``trace`` (``Trace_ELBO``: Monte Carlo KL, AEVB estimator A), ``trace_meanfield``
(``TraceMeanField_ELBO``: analytic KL where Pyro knows it, AEVB estimator B, else Monte Carlo),
their ``jit_*`` variants, and ``iwae`` (Burda et al. 2015).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Set, Tuple

import pyro
import torch
from pyro.infer import JitTrace_ELBO, JitTraceMeanField_ELBO
from pyro.infer.elbo import ELBO

from .elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from .model import VAE
from .registry import OBJECTIVES
from .traces import log_importance_weights


class Objective:
    """``loss(vae, x, idx, num_data)``: a scalar whose gradient trains every parameter.

    Objectives that take several optimizer steps per minibatch (MCEM's M-step) override
    ``step_losses``; objectives with state that must survive a resume (MCEM's persistent chains)
    override ``state_dict``/``load_state_dict``; objectives that cannot use some registry entry
    say so in ``check``.
    """

    name: str = "objective"
    loss_is_elbo: bool = False  # True when -loss/N is itself an ELBO estimate (then logged as one)
    supports_distributed: bool = True  # False for objectives with per-datapoint state
    needs_param_store: bool = False  # True if parameters must appear as Pyro param sites (JIT)
    trains_guide: bool = True  # False where q(z|x) is left as initialised (MCEM): estimators drawing from it are loose

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        raise NotImplementedError

    def step_losses(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> Iterator[torch.Tensor]:
        """The losses of the optimizer steps taken on this minibatch (computed lazily, in order)."""
        yield self.loss(vae, x, idx, num_data)

    def check(self, vae: VAE) -> None:
        """Raise a ConfigError if this objective cannot train ``vae``."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class ElboObjective(Objective):
    """Any Pyro ELBO used through ``differentiable_loss`` with one torch optimizer over all
    parameters (Pyro's recommended custom-loop pattern; ``pyro.optim`` would run one optimizer per
    parameter, a quarter of the step time)."""

    loss_is_elbo = True

    def __init__(self, name: str, elbo: ELBO, needs_param_store: bool = False) -> None:
        self.name = name
        self.elbo = elbo
        self.needs_param_store = needs_param_store  # the JIT ELBOs feed param sites to the compiled graph
        self._vae: Optional[VAE] = None
        self._compiled: Set[Tuple[int, int, int, int]] = set()  # the JIT ELBO's compile keys seen so far

    def _programs(self, vae: VAE):
        # One bound method per VAE: Pyro's JIT keys its compile cache on id(model) and id(guide),
        # and ``vae.model`` is a new object at every attribute access.
        if self._vae is not vae:
            self._vae, self._model, self._guide = vae, vae.model, vae.guide
        return self._model, self._guide

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        model, guide = self._programs(vae)
        args = (x,) if idx is None else (x, idx)
        if not self.needs_param_store:
            return self.elbo.differentiable_loss(model, guide, *args, num_data=num_data)
        with warnings.catch_warnings(), _UnoptimizedGraphs():
            # Pyro's JIT ELBOs are built on torch.jit.trace, which torch >= 2.9 marks deprecated at
            # every compile; users cannot act on that, so it is not repeated to them.
            warnings.filterwarnings("ignore", message=r"`torch.jit.trace` is deprecated", category=FutureWarning)
            # num_data goes as a keyword: Pyro's JIT treats keywords as static (an int cannot be traced).
            key = (id(model), id(guide), len(args), num_data)  # what Pyro's compile cache tells apart
            if key not in self._compiled:
                # Pyro's first call runs the model and guide twice more (to find the parameters, then
                # to trace them), drawing z each time. Compiling on a forked random stream keeps the
                # draws of every step, the first included, those of the eager estimator: same seed,
                # same z (and a resumed run draws as an uninterrupted one).
                with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                    self.elbo.differentiable_loss(model, guide, *args, num_data=num_data)
                self._compiled.add(key)
            return self.elbo.differentiable_loss(model, guide, *args, num_data=num_data)


class _UnoptimizedGraphs:
    """Inside, TorchScript runs a compiled graph as recorded, without its optimization passes.

    A traced ELBO's graph is a chain of large tensor operations; the passes (specialization,
    differentiable subgraphs with symbolic gradients, CSE) do not make it faster, but they take
    about 40 ms at the first call and 25 ms at the second (the profiling executor optimizes after one
    profiled run): about a third of the time to a first step. Measured interleaved, 5-step blocks,
    batch 100, 2 CPU threads: 1.000-1.005x the optimized graph's step time in all four JIT
    configurations of the benchmark suite. A class, not ``torch.jit.optimized_execution`` (a
    generator-based context manager): this is entered at every step."""

    def __enter__(self) -> None:
        self._saved = torch._C._get_graph_executor_optimize()
        torch._C._set_graph_executor_optimize(False)

    def __exit__(self, *exc: Any) -> None:
        torch._C._set_graph_executor_optimize(self._saved)


class _CachedJitTraceMeanField_ELBO(JitTraceMeanField_ELBO):
    """Pyro 1.9's ``JitTraceMeanField_ELBO.differentiable_loss`` checks for ``_loss_and_surrogate_loss``
    but stores ``_differentiable_loss``, so it builds a new compiled function (and traces again) on
    every call, about 5x slower than no JIT. Reuse the stored one."""

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        compiled = getattr(self, "_differentiable_loss", None)
        if compiled is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        kwargs["_pyro_model_id"] = id(model)
        kwargs["_pyro_guide_id"] = id(guide)
        return compiled(*args, **kwargs)


class _OneGradientJitTrace_ELBO(JitTrace_ELBO):
    """Pyro 1.9's ``JitTrace_ELBO.differentiable_loss`` returns ``loss + (surrogate - surrogate.detach())``
    with a ``loss`` that is itself differentiable (the compiled function returns it with its graph),
    so its gradient is that of the loss plus that of the surrogate: twice the ELBO's gradient for a
    reparameterized guide. Adagrad and Adam hide a constant factor, but SGD's step doubles and a
    weight prior gets half its weight. ``Trace_ELBO`` takes the loss's value only (``torch_item``);
    this does the same with ``detach`` (no host sync)."""

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss, surrogate_loss = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        return loss.detach() + (surrogate_loss - surrogate_loss.detach())


class IWAEObjective(Objective):
    """The importance-weighted bound (Burda, Grosse & Salakhutdinov 2015)::

        L_k(x) = E[ log (1/k) sum_i p(x, z_i) / q(z_i | x) ],   z_i ~ q(z | x)

    computed per datapoint from unscaled log-probs; the minibatch sum is scaled by N/M *after* the
    log-sum-exp (``RenyiELBO(alpha=0)`` puts the scale inside it, which biases the bound).
    """

    name = "iwae"

    def __init__(self, num_particles: int) -> None:
        self.num_particles = num_particles

    def loss(self, vae: VAE, x: torch.Tensor, idx: Optional[torch.Tensor], num_data: int) -> torch.Tensor:
        log_w = log_importance_weights(vae.model, vae.guide, x, num_particles=self.num_particles)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)  # (batch,)
        return -bound.sum() * (num_data / x.shape[0])


def _check_particles(num_particles: int) -> None:
    if num_particles < 1:
        raise ValueError("num_particles must be >= 1")


def _elbo(name: str, elbo_class: type, num_particles: int, **extra) -> Objective:
    _check_particles(num_particles)
    # A particle plate of size 1 only adds broadcasting work: vectorize from two particles on.
    vectorize = num_particles > 1
    elbo = elbo_class(num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=1, **extra)
    return ElboObjective(name, elbo, needs_param_store=name.startswith("jit"))


@OBJECTIVES.register("trace")
def trace(*, num_particles: int = 1) -> Objective:
    """Trace_ELBO with L = ``num_particles`` vectorized samples per datapoint (AEVB estimator A).
    Computed by :class:`~pyro_vae.elbo.LeanTrace_ELBO`: Pyro's estimator without its per-step
    trace copies and host syncs."""
    return _elbo("trace", LeanTrace_ELBO, num_particles)


@OBJECTIVES.register("trace_meanfield")
def trace_meanfield(*, num_particles: int = 1) -> Objective:
    """TraceMeanField_ELBO: the paper's estimator B (analytic KL, AEVB eq. 10), computed by
    :class:`~pyro_vae.elbo.LeanTraceMeanField_ELBO`."""
    return _elbo("trace_meanfield", LeanTraceMeanField_ELBO, num_particles)


@OBJECTIVES.register("jit_trace")
def jit_trace(*, num_particles: int = 1) -> Objective:
    """JitTrace_ELBO, with Pyro 1.9's doubled gradient of ``differentiable_loss`` corrected."""
    return _elbo("jit_trace", _OneGradientJitTrace_ELBO, num_particles, ignore_jit_warnings=True)


@OBJECTIVES.register("jit_trace_meanfield")
def jit_trace_meanfield(*, num_particles: int = 1) -> Objective:
    """JitTraceMeanField_ELBO, with Pyro 1.9's re-trace-every-step bug worked around."""
    return _elbo("jit_trace_meanfield", _CachedJitTraceMeanField_ELBO, num_particles, ignore_jit_warnings=True)


@OBJECTIVES.register("iwae")
def iwae(*, num_particles: int = 5) -> Objective:
    _check_particles(num_particles)
    return IWAEObjective(num_particles)


def clear_pyro_state() -> None:
    """Start from an empty param store: ``pyro.module`` would otherwise hand a new model the
    parameters a previous model left under the same name."""
    pyro.clear_param_store()
