"""Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` estimators, with the per-step overhead of a
training loop taken out.

For a guide whose every sample site is reparameterized (every guide in the registry), the
surrogate loss of ``Trace_ELBO`` is the plain Monte Carlo ELBO (Kingma & Welling 2013, eq. 6,
"estimator A")::

    L(x) = sum_sites scale * log p(site | ...)  -  sum_guide_sites scale * log q(z | x),   z ~ q

and that of ``TraceMeanField_ELBO`` replaces each latent's two terms by the analytic
``-scale * KL(q(z|x) || p(z))`` where torch knows it (eq. 7, "estimator B"; eq. 10 for Gaussians),
falling back to the Monte Carlo terms where it does not. ``scale`` is the subsample scale N/M of
the data plate.

Pyro computes the same values, but per step it also copies both traces (``prune_subsample_sites``),
computes log-probs and score parts that the analytic-KL estimator throws away, and calls
``.item()`` twice (a host-device synchronisation on CUDA). Those account for most of the gap
between a Pyro step and a hand-written PyTorch one. The classes below read the two traces
directly and return the same loss tensor (tested equal, value and gradients, to Pyro's own).

They defer to Pyro's implementation whenever its checks or machinery are needed: with validation
enabled, inside a JIT trace, and for ``GuideMessenger`` guides; a guide with a non-reparameterized
or enumerated site gets Pyro's score-function estimator from ``Trace_ELBO`` and a clear error
from ``TraceMeanField_ELBO`` (which would otherwise silently drop those terms).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.trace_struct import Trace
from torch.distributions import kl_divergence

from pyro_vae.traces import sample_sites


def _log_prob_sum(site: dict) -> torch.Tensor:
    """``sum(scale * mask * log p(value))`` of one sample site, as Pyro's ``Trace.compute_log_prob``."""
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


def _plus(total: Optional[torch.Tensor], term: torch.Tensor) -> torch.Tensor:
    """``total + term``, where a ``total`` of None is the start of the sum: the same floats as a sum
    from 0 in the same order, without the ``0 + ...`` operation and its backward node per step."""
    return term if total is None else total + term


def _minus(total: Optional[torch.Tensor], term: torch.Tensor) -> torch.Tensor:
    """``total - term``, from a start of None as :func:`_plus`."""
    return -term if total is None else total - term


def _fast_path_applies(guide: Callable) -> bool:
    if is_validation_enabled() or torch._C._get_tracing_state():
        return False
    return not isinstance(poutine.unwrap(guide), poutine.messenger.Messenger)


def _all_reparameterized(guide_trace: Trace) -> bool:
    return all(
        getattr(site["fn"], "has_rsample", False) and site["infer"].get("enumerate") is None
        for site in sample_sites(guide_trace)
    )


class _LeanELBOMixin:
    """``differentiable_loss`` read straight from the two traces; ``_particle_elbo`` says how."""

    num_particles: int
    vectorize_particles: bool

    def _particle_elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _traces(self, model: Callable, guide: Callable, args: Tuple, kwargs: dict) -> Tuple[Trace, Trace]:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not _fast_path_applies(guide):
            return super().differentiable_loss(model, guide, *args, **kwargs)  # type: ignore[misc]
        if self.vectorize_particles:
            # one pass with an outer particle plate; the sums then run over particles too
            model, guide = self._vectorized_num_particles(model), self._vectorized_num_particles(guide)  # type: ignore[attr-defined]
            passes = 1
        else:
            passes = self.num_particles
        elbo: Optional[torch.Tensor] = None
        for _ in range(passes):
            model_trace, guide_trace = self._traces(model, guide, args, kwargs)
            if _all_reparameterized(guide_trace):
                elbo = _plus(elbo, self._particle_elbo(model_trace, guide_trace))
            else:  # score-function terms: Pyro's own estimator on these same traces
                self._check_score_function_allowed()
                model_trace = poutine.util.prune_subsample_sites(model_trace)
                guide_trace = poutine.util.prune_subsample_sites(guide_trace)
                model_trace.compute_log_prob()
                guide_trace.compute_score_parts()
                loss, surrogate_loss = self._differentiable_loss_particle(model_trace, guide_trace)  # type: ignore[attr-defined]
                # the ELBO's value with the surrogate's gradient, as Pyro returns it
                elbo = _minus(elbo, loss + (surrogate_loss - surrogate_loss.detach()))
        loss = -elbo  # type: ignore[operator]
        return loss if self.num_particles == 1 else loss / self.num_particles

    def _check_score_function_allowed(self) -> None:
        """Raise if this estimator cannot handle a non-reparameterized guide site."""


class LeanTrace_ELBO(_LeanELBOMixin, Trace_ELBO):
    """``Trace_ELBO`` (AEVB estimator A): ``log p(x, z) - log q(z | x)`` summed over sites."""

    def _particle_elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        elbo = None
        for site in sample_sites(model_trace):
            elbo = _plus(elbo, _log_prob_sum(site))
        for site in sample_sites(guide_trace):
            elbo = _minus(elbo, _log_prob_sum(site))
        return elbo  # type: ignore[return-value]


class LeanTraceMeanField_ELBO(_LeanELBOMixin, TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` (AEVB estimator B): analytic KL where torch has it."""

    def _check_score_function_allowed(self) -> None:
        # Pyro raises this only with validation on and otherwise drops the score-function terms.
        raise NotImplementedError(
            "trace_meanfield needs a guide whose every sample site is reparameterized (has rsample); "
            "use the objective `trace`, which adds score-function terms for the others."
        )

    def _particle_elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        elbo = None
        for site in sample_sites(model_trace):
            if site["is_observed"]:
                elbo = _plus(elbo, _log_prob_sum(site))
                continue
            guide_site = guide_trace.nodes[site["name"]]
            try:
                kl = kl_divergence(guide_site["fn"], site["fn"])
            except NotImplementedError:
                elbo = _minus(_plus(elbo, _log_prob_sum(site)), _log_prob_sum(guide_site))
                continue
            kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
            if torch.is_tensor(kl):
                elbo = _minus(elbo, kl.sum())
            else:  # a constant KL (identical distributions) counts once per batch element
                elbo = _minus(elbo, kl * torch.Size(guide_site["fn"].batch_shape).numel())
        for site in sample_sites(guide_trace):  # auxiliary guide sites, absent from the model
            if site["name"] not in model_trace.nodes:
                elbo = _minus(elbo, _log_prob_sum(site))
        return elbo  # type: ignore[return-value]
