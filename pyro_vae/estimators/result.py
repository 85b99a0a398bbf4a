"""The result of a log p(x) estimate: per-datapoint values, their mean, a standard error, and the
settings that produced it (so that every reported number carries its estimator settings)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict

import torch


def standard_error(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values`` over datapoints: std / sqrt(n) (NaN for one value)."""
    n = values.numel()
    return float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")


@dataclass
class Estimate:
    """What every estimator returns: one value per datapoint (log p(x), or a bound on it, in nats),
    the settings that produced them and what the estimator measured of its own quality
    (``diagnostics``: effective sample sizes, acceptance rates, R-hat, ...). ``mean`` and
    ``stderr`` summarise over datapoints; ``to_dict()`` is what the command line writes as JSON."""

    estimator: str
    per_datapoint: torch.Tensor  # (n,) float64, nats
    settings: Dict[str, Any]
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    # the Markov chains behind the number (the App. D estimator's HMC draws, AIS's final states and
    # log weights) as an ``arviz.InferenceData``; not part of ``to_dict``
    chains: Any = None

    @property
    def mean(self) -> float:
        return float(self.per_datapoint.mean())

    @property
    def stderr(self) -> float:
        """Standard error of the mean over datapoints: std / sqrt(n)."""
        return standard_error(self.per_datapoint)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "estimator": self.estimator,
            "value": self.mean,
            "stderr": self.stderr,
            "n": int(self.per_datapoint.numel()),
            "settings": self.settings,
            "diagnostics": self.diagnostics,
        }

    def __str__(self) -> str:
        """The value with its standard error and the estimator's settings, as the CLI prints them."""
        settings = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.estimator}: {self.mean:.3f} +- {self.stderr:.3f} nats (n={self.per_datapoint.numel()}) [{settings}]"
