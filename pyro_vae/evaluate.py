"""Evaluate a trained run: log p(x) by the chosen estimator, written as JSON with every setting
needed to reproduce the number (estimator settings, split, binarization, seed, standard error).

``bdmc`` is the exception that scores no data split: it checks AIS itself, on points simulated from
the trained model (whose exact posterior samples only simulation provides)."""

from __future__ import annotations

import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from . import distributed, estimators
from .config import AIS_SCHEDULES, AIS_STARTS, ESTIMATORS
from .datasets import binarize
from .errors import ConfigError
from .estimators.result import standard_error
from .model import VAE
from .paths import prepared_output, write_text_atomically
from .train import Trainer, hardware, load_run

# the App. D estimator's chains per datapoint and warmup steps by default, as its signature has them
_HMC_DEFAULTS = inspect.signature(estimators.hmc_marginal_likelihood).parameters
HMC_CHAINS, HMC_WARMUP = _HMC_DEFAULTS["num_chains"].default, _HMC_DEFAULTS["num_warmup"].default
BDMC_POINTS = 100  # points bdmc simulates when n is not given (each costs two AIS runs)
GAP_REPORT_ESTIMATES = ("elbo", "iwae", "ais", "elbo_local_gaussian")  # the estimates a gap report may hold


def default_output_name(estimator: str, split: str, settings: Mapping[str, Any], subset: Optional[int] = None) -> str:
    """The file an evaluation writes in its run folder when no ``out`` is given, named by what sets
    its number apart: ``eval_iwae_k5000_test.json``, ``eval_ais_steps1000_chains16_test_n100.json``
    (the first 100 points), ``..._seed1.json``. A quick ``--k 10`` check therefore never replaces the
    k = 5000 estimate beside it; only the same evaluation run again does.

    :param settings: ``evaluate_run``'s arguments ``k``, ``ais_steps``, ``ais_chains``, ``ais_start``,
        ``ais_schedule``, ``hmc_samples``, ``hmc_chains``, ``hmc_warmup`` and ``seed`` (its defaults
        stay in one place, its signature; the file names of the defaults leave out what they do not
        change, as the names of earlier runs' files do).
    :param subset: the number of points when they are fewer than the split holds (for ``bdmc``: the
        points it simulates).
    """
    ais_steps, ais_chains = settings["ais_steps"], settings["ais_chains"]
    ais_start, ais_schedule = settings["ais_start"], settings["ais_schedule"]
    k, hmc_samples, seed = settings["k"], settings["hmc_samples"], settings["seed"]
    ais = [f"steps{ais_steps}", f"chains{ais_chains}"]
    if ais_start != "prior":
        ais.append(ais_start)
    if ais_schedule != "sigmoid":
        ais.append(ais_schedule)
    hmc = [f"samples{hmc_samples}"]
    if settings["hmc_chains"] != HMC_CHAINS:
        hmc.append(f"chains{settings['hmc_chains']}")
    if settings["hmc_warmup"] != HMC_WARMUP:
        hmc.append(f"warmup{settings['hmc_warmup']}")
    tags = {"iwae": [f"k{k}"], "ais": ais, "hmc": hmc, "gaps": [f"k{k}", *ais], "bdmc": ais}
    parts = ["eval", estimator, *tags.get(estimator, []), split]
    if subset is not None:
        parts.append(f"n{subset}")
    if seed != 0:
        parts.append(f"seed{seed}")
    return "_".join(parts) + ".json"


def evaluate_run(
    run_dir: Path | str,
    estimator: str = "iwae",
    k: int = 5000,
    split: str = "test",
    n: Optional[int] = None,
    seed: int = 0,
    device: Optional[str] = None,
    memory_gb: float = 2.0,
    ais_steps: int = 1000,
    ais_chains: int = 16,
    ais_start: str = "prior",
    ais_schedule: str = "sigmoid",
    hmc_samples: int = 50,
    hmc_chains: int = HMC_CHAINS,
    hmc_warmup: int = HMC_WARMUP,
    progress: bool = True,
    out: Optional[Path | str] = None,
) -> Dict[str, Any]:
    """Estimate log p(x) of the run in ``run_dir`` and write it as JSON (``out``, else in the run
    folder under :func:`default_output_name`); returns what was written, with its ``path``.

    :param estimator: one of :data:`pyro_vae.config.ESTIMATORS`; ``bdmc`` scores ``n`` points
        simulated from the model (100 by default) instead of a split, ``exact`` needs a
        linear-Gaussian model.
    :param n: the first n points of the split (all when None).
    :param seed: seeds torch's RNG before estimating (each rank of a torchrun job adds its own offset).
    :raises ConfigError: for a bad setting, before the run is loaded where it can be.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}.")
    if split not in ("test", "train"):
        raise ConfigError(f"split must be 'test' or 'train', not {split!r}.")
    counts = {"k": k, "n": n, "ais_steps": ais_steps, "ais_chains": ais_chains, "hmc_samples": hmc_samples, "hmc_chains": hmc_chains,
              "hmc_warmup": hmc_warmup}
    for name, value in counts.items():
        least = 0 if name == "hmc_warmup" else 1
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ConfigError(f"{name} must be a whole number >= {least}, not {value!r}.")
    if not (isinstance(memory_gb, (int, float)) and 0 < memory_gb < float("inf")):
        raise ConfigError(f"memory_gb must be a finite number > 0 (GiB for one IWAE chunk), not {memory_gb!r}.")
    if ais_start not in AIS_STARTS:
        raise ConfigError(f"ais_start must be 'prior' or 'encoder' (q(z|x), \"AIS + encoder\"), not {ais_start!r}.")
    if ais_schedule not in AIS_SCHEDULES:
        raise ConfigError(f"ais_schedule must be 'sigmoid' or 'linear' (how the temperatures rise from 0 to 1), not {ais_schedule!r}.")
    if estimator == "bdmc" and ais_start != "prior":
        raise ConfigError("bdmc runs AIS from the prior (its reverse chains end there); drop --ais-start encoder.")
    if out is not None:
        out = prepared_output(out, "--out")
    trainer = load_run(run_dir, device=device)
    if not trainer.objective.trains_guide and trainer.dist.is_main and (
            estimator in ("elbo", "iwae", "gaps") or (estimator == "ais" and ais_start == "encoder")):
        warnings.warn(
            f"pyro-vae: objective {trainer.objective.name!r} trains no encoder, so q(z|x) is as initialised: "
            f"--estimator {estimator}{' --ais-start encoder' if estimator == 'ais' else ''} draws from it and gives a valid "
            "but very loose lower bound. Estimate this run's log p(x) with --estimator hmc or ais (from the prior).",
            UserWarning,
            stacklevel=2,
        )
    settings = {"k": k, "ais_steps": ais_steps, "ais_chains": ais_chains, "ais_start": ais_start, "ais_schedule": ais_schedule,
                "hmc_samples": hmc_samples, "hmc_chains": hmc_chains, "hmc_warmup": hmc_warmup, "seed": seed}
    if estimator == "bdmc":
        n = n or BDMC_POINTS
        out = out or Path(run_dir) / default_output_name("bdmc", "simulated", settings, subset=n)
        return _bdmc(trainer, n, ais_steps, ais_chains, ais_schedule, run_dir, seed, progress, out, memory_gb)
    x = trainer.x_test if split == "test" else trainer.x_train
    if split == "train" and trainer.config.data.binarize == "dynamic":
        # Dynamic binarization has no fixed training set: score one seeded draw of it.
        x = binarize(x, trainer.config.data.binarize_seed)
    split_size = x.shape[0]
    if n is not None:
        if n > x.shape[0] and trainer.dist.is_main:
            warnings.warn(
                f"pyro-vae: n = {n} (--n) is more than the {x.shape[0]} points of the {split} split; all {x.shape[0]} are evaluated.",
                UserWarning,
                stacklevel=2,
            )
        x = x[:n]
    subset = x.shape[0] if x.shape[0] < split_size else None
    out = out or Path(run_dir) / default_output_name(estimator, split, settings, subset=subset)
    info = trainer.dist
    n_points = x.shape[0]
    units = None
    if estimator in ("iwae", "gaps") and n_points > 1 and info.is_main:
        # Burda et al. report active units beside IWAE (also the gap report's): over all the points,
        # before any sharding
        torch.manual_seed(seed)
        units = estimators.active_units(trainer.vae, x)
    if info.enabled:
        distributed.check_shardable(n_points, info)
        x = x[distributed.shard(n_points, info)]  # each rank scores a contiguous shard
    torch.manual_seed(seed + 7919 * info.rank)
    vae = trainer.vae
    start = time.perf_counter()
    if estimator == "elbo":
        est = estimators.elbo(vae, x, num_samples=1, memory_gb=memory_gb)
    elif estimator == "iwae":
        est = estimators.iwae(vae, x, k=k, memory_gb=memory_gb, progress=progress)
    elif estimator == "ais":
        est = estimators.ais(vae, x, num_steps=ais_steps, num_chains=ais_chains, schedule=ais_schedule, start=ais_start, progress=progress,
                             memory_gb=memory_gb)
    elif estimator == "hmc":
        est = estimators.hmc_marginal_likelihood(vae, x, num_samples=hmc_samples, num_warmup=hmc_warmup, num_chains=hmc_chains,
                                                 memory_gb=memory_gb)
    elif estimator == "exact":
        est = _exact(vae, x)
    else:
        ais_options = {"num_chains": ais_chains, "schedule": ais_schedule, "start": ais_start}
        return _gaps(trainer, x, n_points, k, ais_steps, ais_options, memory_gb, run_dir, split, seed, start, out, units)
    if info.enabled:
        est.diagnostics = combined_diagnostics(distributed.gather_objects((est.per_datapoint.numel(), est.diagnostics), info))
        est.per_datapoint = _gathered(est.per_datapoint, n_points, trainer)
        est.settings["world_size"] = info.world_size
    if units is not None:
        est.diagnostics["active_units"] = units
    result = est.to_dict()
    # log p(x) of every point, so that two runs scored on the same points compare point by point
    # (`pyro-vae compare`: the paired error of a difference is a fraction of each estimate's own)
    result["per_datapoint"] = est.per_datapoint.tolist()
    result.update(
        run=str(run_dir),
        split=split,
        seed=seed,
        seconds=round(time.perf_counter() - start, 3),
        data=trainer.data.info,
        device=str(trainer.device),
        hardware=hardware(trainer.device),
        trained_epochs=trainer.epoch,
        trained_samples=trainer.samples_seen,
    )
    path = Path(out)
    if info.is_main:
        write_text_atomically(path, json.dumps(result, indent=2, default=str))
    result["path"] = str(path)
    return result


def combined_diagnostics(parts: Sequence[Tuple[int, Dict[str, Any]]]) -> Dict[str, Any]:
    """An estimator's diagnostics over all datapoints from those of each rank's shard, ``(points,
    diagnostics)`` a rank: counts of datapoints (``datapoints_*``) add up, ``*_max`` and ``*_min*``
    (``accept_min_chain``) take the extreme, ``*_mean`` the mean weighted by the shards' points, and
    anything else (a threshold, the same on every rank) is rank 0's."""
    total = sum(points for points, _ in parts) or 1
    out: Dict[str, Any] = {}
    for key, first in parts[0][1].items():
        values = [d[key] for _, d in parts]
        if key.startswith("datapoints_"):
            out[key] = sum(values)
        elif key.endswith("_max"):
            out[key] = max(values)
        elif key.endswith("_min") or "_min_" in key:
            out[key] = min(values)
        elif key.endswith("_mean"):
            out[key] = sum(points * d[key] for points, d in parts) / total
        else:
            out[key] = first
    return out


def _gathered(values: torch.Tensor, n_points: int, trainer: Trainer) -> torch.Tensor:
    """Every rank's shard of per-datapoint values, in datapoint order: the values one process
    would have produced (itself, without torchrun)."""
    if not trainer.dist.enabled:
        return values
    return distributed.gather_shards(values.to(trainer.device), n_points, trainer.dist).cpu()


def check_exact_applies(vae: VAE) -> None:
    """Raise a ConfigError unless ``vae`` is linear-Gaussian (the model ``exact`` needs)."""
    try:
        estimators.linear_gaussian_of(vae)
    except ValueError as e:
        raise ConfigError(f"estimator exact: {e}. This model is not of that kind, so its log p(x) has no closed form; "
                          "use iwae, ais or hmc.") from None


def _exact(vae: VAE, x: torch.Tensor) -> estimators.Estimate:
    """Closed-form log p(x) of a linear-Gaussian model: the ground truth for the other estimators."""
    check_exact_applies(vae)
    return estimators.Estimate("exact", estimators.exact_log_px(vae, x).double(), settings={"model": "linear-Gaussian, closed form"})


def _gaps(trainer, x, n_points, k, ais_steps, ais_options, memory_gb, run_dir, split, seed, start, out: Path, units) -> Dict[str, Any]:
    """ELBO, IWAE-k and AIS side by side per datapoint, with the approximation and amortization gaps
    (``x``: this rank's shard of the ``n_points``; ``units``: the active units of all of them, or None)."""
    report = estimators.gap_report(trainer.vae, x, k=k, ais_steps=ais_steps, memory_gb=memory_gb, **ais_options)
    if trainer.dist.enabled:
        for name in GAP_REPORT_ESTIMATES:
            if name in report:
                report[name].per_datapoint = _gathered(report[name].per_datapoint, n_points, trainer)
        report["per_datapoint"] = {name: _gathered(v, n_points, trainer) for name, v in report["per_datapoint"].items()}
        report["summary"] = {name: float(v.mean()) for name, v in report["per_datapoint"].items()}
    estimates = {name: report[name].to_dict() for name in GAP_REPORT_ESTIMATES if name in report}
    per_point = {name: report[name].per_datapoint.tolist() for name in estimates}
    per_point.update({name: v.tolist() for name, v in report["per_datapoint"].items()})
    first = estimates["iwae"]
    if units is not None:
        first["diagnostics"]["active_units"] = units
    # the standard error of each mean gap over datapoints (the value is the amortization gap)
    stderr = {name: standard_error(v) for name, v in report["per_datapoint"].items()}
    settings = {"k": k, "ais_steps": ais_steps, **{f"ais_{key}": v for key, v in ais_options.items()}, "log_px_from": report["log_px_from"]}
    if trainer.dist.enabled:
        settings["world_size"] = trainer.dist.world_size
    result = {
        "estimator": "gaps", "value": report["summary"]["amortization_gap"], "stderr": stderr["amortization_gap"], "n": first["n"],
        "settings": settings, "summary": report["summary"], "summary_stderr": stderr, "estimates": estimates, "per_datapoint": per_point,
        "run": str(run_dir), "split": split, "seed": seed, "seconds": round(time.perf_counter() - start, 3),
        "data": trainer.data.info, "device": str(trainer.device), "hardware": hardware(trainer.device), "trained_epochs": trainer.epoch,
    }
    path = Path(out)
    if trainer.dist.is_main:  # every rank holds the same gathered report
        write_text_atomically(path, json.dumps(result, indent=2, default=str))
    result["path"] = str(path)
    return result


def _bdmc(trainer: Trainer, n: int, ais_steps: int, ais_chains: int, ais_schedule: str, run_dir: Path | str, seed: int,
          progress: bool, out: Path | str, memory_gb: float = 2.0) -> Dict[str, Any]:
    """BDMC (Grosse et al. 2015) on ``n`` points simulated from the trained model: forward AIS from
    the prior bounds each log p(x) from below, reverse AIS from the exact posterior sample from
    above (both stochastically). Their gap bounds the error of AIS with these settings on data like
    the model's own; where it is small, ``--estimator ais`` with the same settings can be trusted on
    real data about as far as the model fits them."""
    info = trainer.dist
    distributed.check_shardable(n, info)
    local = distributed.shard(n, info)  # each rank simulates its share (all n in one process)
    torch.manual_seed(seed + 7919 * info.rank)
    start = time.perf_counter()
    report = estimators.bdmc(trainer.vae, num_points=local.stop - local.start, num_steps=ais_steps, num_chains=ais_chains,
                             schedule=ais_schedule, progress=progress, memory_gb=memory_gb)
    lower, upper = report["lower"], report["upper"]
    for est in (lower, upper):
        est.per_datapoint = _gathered(est.per_datapoint, n, trainer)
    gap = upper.per_datapoint - lower.per_datapoint
    result = {
        "estimator": "bdmc", "value": lower.mean, "stderr": lower.stderr, "n": n,
        "settings": {**lower.settings, "points": "simulated from the model"},
        "lower": lower.to_dict(), "upper": upper.to_dict(),
        # Both bounds are stochastic (they hold in expectation), so a point's gap may come out negative:
        # the gap's standard error over points says how much of its mean is noise.
        "gap_mean": float(gap.mean()), "gap_stderr": standard_error(gap), "gap_max": float(gap.max()),
        "per_datapoint": {"lower": lower.per_datapoint.tolist(), "upper": upper.per_datapoint.tolist()},
        "run": str(run_dir), "split": "simulated", "seed": seed, "seconds": round(time.perf_counter() - start, 3),
        "trained_on": trainer.data.info, "device": str(trainer.device), "hardware": hardware(trainer.device), "trained_epochs": trainer.epoch,
        "trained_samples": trainer.samples_seen,
    }
    if info.enabled:
        result["settings"]["world_size"] = info.world_size
    path = Path(out)
    if info.is_main:
        write_text_atomically(path, json.dumps(result, indent=2, default=str))
    result["path"] = str(path)
    return result
