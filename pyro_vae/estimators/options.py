"""The settings of the log p(x) estimators, declared once.

``EstimatorOptions`` holds each setting with its default, bounds and help text. The config's
``evaluation:`` section extends it, ``pyro-vae evaluate`` makes its flags from it, and the
estimator functions take their defaults from ``DEFAULTS``, so a default changes in one place.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Tuple, get_args, get_origin

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pyro_vae.errors import ConfigError
from pyro_vae.user_numbers import WholeNumber, is_real_number

# the estimators of `pyro-vae evaluate` (and `train --evaluate`): pyro_vae.runs.evaluate runs them
EstimatorName = Literal["elbo", "iwae", "ais", "hmc", "gaps", "bdmc", "exact"]
ESTIMATORS: Tuple[str, ...] = get_args(EstimatorName)
# how AIS's temperatures rise from 0 to 1, and where its chains start: p(z), or q(z|x) ("AIS + encoder")
AisSchedule = Literal["sigmoid", "linear"]
AisStart = Literal["prior", "encoder"]
AIS_SCHEDULES: Tuple[str, ...] = get_args(AisSchedule)
AIS_STARTS: Tuple[str, ...] = get_args(AisStart)


CPU_MEMORY_GB = 2.0  # a chunk's memory cap on CPU when none is given


class EstimatorOptions(BaseModel):
    """The estimators' settings (Burda et al. 2015 for IWAE-k, Neal 2001 for AIS, AEVB App. D for
    the HMC estimator). Whole numbers may be written ``5000`` or ``5e3`` but not ``true``, and are
    bounded: a count beyond the bound is a typo that would run for days, not an experiment."""

    model_config = ConfigDict(extra="forbid")
    k: WholeNumber = Field(5000, gt=0, le=10**7, description="IWAE particles per datapoint")
    memory_gb: Optional[float] = Field(None, gt=0, allow_inf_nan=False, description=(
        "memory cap (GiB) of one chunk: IWAE and ELBO particles; AIS, bdmc, hmc and gap-report datapoints "
        f"(unset: {CPU_MEMORY_GB:g} on CPU, half the free memory of a GPU)"))
    ais_steps: WholeNumber = Field(1000, gt=0, le=10**7, description="AIS transitions (temperatures)")
    ais_chains: WholeNumber = Field(16, gt=0, le=10**5, description="AIS chains per datapoint")
    ais_start: AisStart = Field("prior", description='AIS from the prior or from q(z|x) ("AIS + encoder")')
    ais_schedule: AisSchedule = Field("sigmoid", description="how AIS's temperatures rise from 0 to 1")
    hmc_samples: WholeNumber = Field(50, gt=0, le=10**6, description="posterior draws per chain of the App. D estimator (hmc)")
    hmc_chains: WholeNumber = Field(2, gt=0, le=10**4, description="HMC chains per datapoint of the App. D estimator")
    hmc_warmup: WholeNumber = Field(200, ge=0, le=10**7, description="HMC warmup steps (step-size tuning) per chain of the App. D estimator")


DEFAULTS = EstimatorOptions()

# The settings each estimator reads (the others leave its number as it is).
_AIS = ("ais_steps", "ais_chains", "ais_start", "ais_schedule", "memory_gb")
SETTINGS_USED = {
    "elbo": ("memory_gb",),
    "iwae": ("k", "memory_gb"),
    "ais": _AIS,
    "hmc": ("hmc_samples", "hmc_chains", "hmc_warmup", "memory_gb"),
    "gaps": ("k",) + _AIS,
    "bdmc": ("ais_steps", "ais_chains", "ais_schedule", "memory_gb"),
    "exact": (),
}
BDMC_POINTS = 100  # points bdmc simulates when no n is given (each costs two AIS runs)


def check_memory_gb(memory_gb: Optional[float], what: str = "one chunk") -> None:
    """``memory_gb`` must be a finite number > 0 (GiB), or None for the device's own budget."""
    if memory_gb is None:
        return
    if not is_real_number(memory_gb) or not 0 < memory_gb < float("inf"):
        raise ValueError(f"memory_gb (the memory cap of {what}, in GiB) must be a finite number > 0, not {memory_gb!r}")


def resolved_memory_gb(memory_gb: Optional[float], device: torch.device) -> float:
    """The cap in GiB that an estimator on ``device`` uses (and records) for ``memory_gb``."""
    return memory_budget(memory_gb, device) / 2**30


def memory_budget(memory_gb: Optional[float], device: torch.device, what: str = "one chunk") -> int:
    """Bytes one chunk may hold: ``memory_gb`` where given; otherwise, on a GPU, half of the memory
    it has free now (the estimators' chunks then fill the card rather than a CPU-sized share of
    it), and on CPU ``CPU_MEMORY_GB``.

    Free on a GPU means free to this process: what the driver reports free plus what torch's
    caching allocator holds without using it (``memory_reserved - memory_allocated``: blocks freed
    by earlier work, which the driver counts as taken), so that a first estimate in a process and a
    later one get the same chunks."""
    check_memory_gb(memory_gb, what)
    if memory_gb is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return int((free + max(0, cached)) // 2)
        memory_gb = CPU_MEMORY_GB
    return int(memory_gb * 2**30)


def describe_setting(name: str) -> str:
    """What a setting must be, in a message's words: "a whole number >= 1", "'prior' or 'encoder'"."""
    field = EstimatorOptions.model_fields[name]
    if get_origin(field.annotation) is Literal:
        return " or ".join(map(repr, get_args(field.annotation)))
    if field.annotation is int:
        least = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
        if least is None:
            least = next(m.gt for m in field.metadata if getattr(m, "gt", None) is not None) + 1
        most = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
        return f"a whole number >= {least}" + (f" and <= {most}" if most is not None else "")
    return "a finite number > 0" if field.annotation is float else "a finite number > 0, or unset"


def estimator_options(**settings: Any) -> EstimatorOptions:
    """``EstimatorOptions`` from keyword settings, any left out at its default; a bad or unknown
    setting raises a ConfigError that names it and what it must be."""
    unknown = sorted(set(settings) - set(EstimatorOptions.model_fields))
    if unknown:
        raise ConfigError(f"unknown estimator setting(s) {', '.join(unknown)}; the settings are "
                          f"{', '.join(EstimatorOptions.model_fields)}.")
    try:
        return EstimatorOptions(**settings)
    except ValidationError as e:
        name = str(e.errors()[0]["loc"][0])
        raise ConfigError(f"{name} must be {describe_setting(name)}, not {settings[name]!r}.") from None
