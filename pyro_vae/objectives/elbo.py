"""The ELBO objectives: Pyro's ``Trace_ELBO`` (Monte Carlo KL, AEVB estimator A) and
``TraceMeanField_ELBO`` (analytic KL where Pyro knows it, AEVB estimator B), eager or compiled
with Pyro's JIT.

Registered names: ``trace``, ``trace_meanfield``, ``jit_trace``, ``jit_trace_meanfield``. The JIT
variants draw the same z as the eager ones for the same seed. Two Pyro 1.9 defects are corrected
here: ``JitTrace_ELBO.differentiable_loss`` doubles the gradient, and ``JitTraceMeanField_ELBO``
re-traces at every step.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional, Set, Tuple

import torch
from pyro.infer import JitTrace_ELBO, JitTraceMeanField_ELBO
from pyro.infer.elbo import ELBO

from pyro_vae.components.registry import OBJECTIVES
from pyro_vae.model import VAE
from pyro_vae.objectives.base import Objective
from pyro_vae.objectives.trace_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from pyro_vae.user_numbers import count


class ElboObjective(Objective):
    """Any Pyro ELBO used through ``differentiable_loss`` with one torch optimizer over all
    parameters (Pyro's recommended custom-loop pattern; ``pyro.optim`` would run one optimizer per
    parameter, a quarter of the step time)."""

    loss_is_elbo = True
    capturable = True

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
    differentiable subgraphs with symbolic gradients, CSE) do not make its steps faster, but they
    take a third of the time to a first step (the profiling executor optimizes after one profiled
    run). A class, not ``torch.jit.optimized_execution`` (a generator-based context manager):
    this is entered at every step."""

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


def _elbo(name: str, elbo_class: type, num_particles: int, **extra) -> Objective:
    num_particles = count("num_particles", num_particles)
    # A particle plate of size 1 only adds broadcasting work: vectorize from two particles on.
    vectorize = num_particles > 1
    elbo = elbo_class(num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=1, **extra)
    return ElboObjective(name, elbo, needs_param_store=name.startswith("jit"))


@OBJECTIVES.register("trace")
def trace(*, num_particles: int = 1) -> Objective:
    """Trace_ELBO with L = ``num_particles`` vectorized samples per datapoint (AEVB estimator A).
    Computed by :class:`~pyro_vae.objectives.trace_elbo.LeanTrace_ELBO`: Pyro's estimator without its per-step
    trace copies and host syncs."""
    return _elbo("trace", LeanTrace_ELBO, num_particles)


@OBJECTIVES.register("trace_meanfield")
def trace_meanfield(*, num_particles: int = 1) -> Objective:
    """TraceMeanField_ELBO: the paper's estimator B (analytic KL, AEVB eq. 10), computed by
    :class:`~pyro_vae.objectives.trace_elbo.LeanTraceMeanField_ELBO`."""
    return _elbo("trace_meanfield", LeanTraceMeanField_ELBO, num_particles)


@OBJECTIVES.register("jit_trace")
def jit_trace(*, num_particles: int = 1) -> Objective:
    """JitTrace_ELBO, with Pyro 1.9's doubled gradient of ``differentiable_loss`` corrected."""
    return _elbo("jit_trace", _OneGradientJitTrace_ELBO, num_particles, ignore_jit_warnings=True)


@OBJECTIVES.register("jit_trace_meanfield")
def jit_trace_meanfield(*, num_particles: int = 1) -> Objective:
    """JitTraceMeanField_ELBO, with Pyro 1.9's re-trace-every-step bug worked around."""
    return _elbo("jit_trace_meanfield", _CachedJitTraceMeanField_ELBO, num_particles, ignore_jit_warnings=True)
