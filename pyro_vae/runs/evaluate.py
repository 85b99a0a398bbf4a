"""Evaluate a trained run: log p(x) by the chosen estimator, written as JSON with every setting
needed to reproduce the number (estimator settings, split, binarization, seed, standard error).

``bdmc`` is the exception that scores no data split: it checks AIS itself, on points simulated from
the trained model (whose exact posterior samples only simulation provides)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch

from pyro_vae import distributed, estimators
from pyro_vae.errors import ConfigError, EstimateError, warn
from pyro_vae.estimators.options import BDMC_POINTS, DEFAULTS, ESTIMATORS, SETTINGS_USED, EstimatorOptions, estimator_options
from pyro_vae.estimators.result import Estimate, standard_error
from pyro_vae.files import check_writable, prepared_output, write_atomically_with, write_text_atomically
from pyro_vae.hardware import hardware, versions
from pyro_vae.model import VAE
from pyro_vae.data.datasets import binarize
from pyro_vae.runs.load import TrainedRun, load_run
from pyro_vae.tracking import Callback, TensorBoardLogger
from pyro_vae.user_numbers import count, seed as seed_value

GAP_REPORT_ESTIMATES = ("elbo", "iwae", "ais", "elbo_local_gaussian")  # the estimates a gap report may hold


def default_output_name(estimator: str, split: str, settings: Mapping[str, Any], subset: Optional[int] = None) -> str:
    """The file an evaluation writes in its run folder when no ``out`` is given, named by what sets
    its number apart: ``eval_iwae_k5000_test.json``, ``eval_ais_steps1000_chains16_test_n100.json``
    (the first 100 points), ``..._seed1.json``. A quick ``--k 10`` check therefore never replaces the
    k = 5000 estimate beside it; only the same evaluation run again does.

    :param settings: the estimator settings (``EstimatorOptions`` fields) and ``seed``; a setting at
        its default that does not set the number apart (AIS's start and schedule, the App. D
        estimator's chains and warmup) is left out of the name.
    :param subset: the number of points when they are fewer than the split holds (for ``bdmc``: the
        points it simulates).
    """
    ais = [f"steps{settings['ais_steps']}", f"chains{settings['ais_chains']}"]
    if settings["ais_start"] != DEFAULTS.ais_start:
        ais.append(settings["ais_start"])
    if settings["ais_schedule"] != DEFAULTS.ais_schedule:
        ais.append(settings["ais_schedule"])
    hmc = [f"samples{settings['hmc_samples']}"]
    if settings["hmc_chains"] != DEFAULTS.hmc_chains:
        hmc.append(f"chains{settings['hmc_chains']}")
    if settings["hmc_warmup"] != DEFAULTS.hmc_warmup:
        hmc.append(f"warmup{settings['hmc_warmup']}")
    tags = {"iwae": [f"k{settings['k']}"], "ais": ais, "hmc": hmc, "gaps": [f"k{settings['k']}", *ais], "bdmc": ais}
    parts = ["eval", estimator, *tags.get(estimator, []), split]
    if subset is not None:
        parts.append(f"n{subset}")
    if settings["seed"] != 0:
        parts.append(f"seed{settings['seed']}")
    return "_".join(parts) + ".json"


# The estimators that give one Estimate of the points (gaps and bdmc write reports of their own).
_ESTIMATE: Dict[str, Callable[[VAE, torch.Tensor, EstimatorOptions, bool], Estimate]] = {
    "elbo": lambda vae, x, o, progress: estimators.elbo(vae, x, num_samples=1, memory_gb=o.memory_gb),
    "iwae": lambda vae, x, o, progress: estimators.iwae(vae, x, k=o.k, memory_gb=o.memory_gb, progress=progress),
    "ais": lambda vae, x, o, progress: estimators.ais(vae, x, num_steps=o.ais_steps, num_chains=o.ais_chains, schedule=o.ais_schedule,
                                                      start=o.ais_start, progress=progress, memory_gb=o.memory_gb),
    "hmc": lambda vae, x, o, progress: estimators.hmc_marginal_likelihood(vae, x, num_samples=o.hmc_samples, num_warmup=o.hmc_warmup,
                                                                          num_chains=o.hmc_chains, memory_gb=o.memory_gb),
    "exact": lambda vae, x, o, progress: _exact(vae, x),
}


def evaluate_run(
    run: TrainedRun | Path | str,
    estimator: str = "iwae",
    split: str = "test",
    n: Optional[int] = None,
    seed: int = 0,
    device: Optional[str] = None,
    progress: bool = True,
    out: Optional[Path | str] = None,
    save_chains: Optional[Path | str] = None,
    callbacks: Sequence[Callback] = (),
    **settings: Any,
) -> Dict[str, Any]:
    """Estimate log p(x) of a trained run and write it as JSON (``out``, else in the run folder
    under :func:`default_output_name`); returns what was written, with its ``path``.

    :param run: a run folder, or a run already loaded (``train --evaluate`` scores the model it
        has just trained).
    :param estimator: one of ``ESTIMATORS``; ``bdmc`` scores ``n`` points simulated from the model
        (100 by default) instead of a split, ``exact`` needs a linear-Gaussian model.
    :param n: the first n points of the split (all when None).
    :param seed: seeds torch's RNG before estimating (each rank of a torchrun job adds its own offset).
    :param save_chains: write the Markov chains behind the estimate (``hmc``: every HMC draw with
        its sampler statistics; ``ais``: each chain's final state and log weight) as ArviZ
        ``InferenceData`` to this ``.nc`` file.
    :param callbacks: told of the result when it is written (:class:`~pyro_vae.tracking.Callback`);
        a TensorBoard logger is added when the run's config has ``logging.tensorboard``.
    :param settings: the estimator's settings, the fields of
        :class:`~pyro_vae.estimators.options.EstimatorOptions` (``k``, ``ais_steps``, ...); the
        rest keep their defaults.
    :raises ConfigError: for a bad setting, before the run is loaded.
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}.")
    if split not in ("test", "train"):
        raise ConfigError(f"split must be 'test' or 'train', not {split!r}.")
    try:
        n = None if n is None else count("n", n)  # 1e3 as 1000
        seed = seed_value("seed", seed)  # a seed of 1.5 was used as 1 and recorded as 1.5
    except ValueError as e:
        raise ConfigError(f"{e}.") from None
    options = estimator_options(**settings)
    if estimator == "bdmc" and options.ais_start != "prior":
        raise ConfigError("bdmc runs AIS from the prior (its reverse chains end there); drop --ais-start encoder.")
    unused = [name for name in settings if name not in SETTINGS_USED[estimator] and settings[name] != getattr(DEFAULTS, name)]
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        warn(f"pyro-vae: {flags} {'does' if len(unused) == 1 else 'do'} not apply to --estimator {estimator} and "
             f"{'is' if len(unused) == 1 else 'are'} ignored; it reads {', '.join(SETTINGS_USED[estimator]) or 'no setting'}")
    if out is not None:
        out = prepared_output(out, "--out")
    if save_chains is not None:
        if estimator not in ("hmc", "ais"):
            raise ConfigError(f"--save-chains saves the Markov chains of --estimator hmc or ais; {estimator} runs none.")
        if distributed.from_env().enabled:
            raise ConfigError("--save-chains writes one file of all the chains; run the evaluation in one process (no torchrun).")
        save_chains = prepared_output(save_chains, "--save-chains")
    trained = run if isinstance(run, TrainedRun) else load_run(run, device=device)
    run_dir = trained.run_dir
    callbacks = list(callbacks)
    tensorboard = trained.config.logging.tensorboard
    if tensorboard and trained.dist.is_main:
        callbacks.append(TensorBoardLogger(run_dir / "tensorboard" if tensorboard is True else Path(tensorboard)))
    check_writable(Path(out).parent if out is not None else run_dir, "the folder of the result")  # before the work
    if not trained.trains_guide and trained.dist.is_main and (
            estimator in ("elbo", "iwae", "gaps") or (estimator == "ais" and options.ais_start == "encoder")):
        warn(
            f"pyro-vae: objective {trained.config.objective.name!r} trains no encoder, so q(z|x) is as initialised: "
            f"--estimator {estimator}{' --ais-start encoder' if estimator == 'ais' else ''} draws from it and gives a valid "
            "but very loose lower bound. Estimate this run's log p(x) with --estimator hmc or ais (from the prior).")
    named_by = {**options.model_dump(), "seed": seed}
    if estimator == "bdmc":
        n = n or BDMC_POINTS
        out = out or run_dir / default_output_name("bdmc", "simulated", named_by, subset=n)
        return _told(callbacks, _bdmc(trained, n, options, seed, progress, out))
    x = trained.x_test if split == "test" else trained.x_train
    if split == "train" and trained.config.data.binarize == "dynamic":
        # Dynamic binarization has no fixed training set: score one seeded draw of it.
        x = binarize(x, trained.config.data.binarize_seed)
    split_size = x.shape[0]
    if n is not None:
        if n > x.shape[0] and trained.dist.is_main:
            warn(
                f"pyro-vae: n = {n} (--n) is more than the {x.shape[0]} points of the {split} split; all {x.shape[0]} are evaluated.")
        x = x[:n]
    subset = x.shape[0] if x.shape[0] < split_size else None
    out = out or run_dir / default_output_name(estimator, split, named_by, subset=subset)
    info = trained.dist
    n_points = x.shape[0]
    units = None
    if estimator in ("iwae", "gaps") and n_points > 1 and info.is_main:
        # Burda et al. report active units beside IWAE (also the gap report's): over all the points,
        # before any sharding
        torch.manual_seed(seed)
        units = estimators.active_units(trained.vae, x)
    if info.enabled:
        distributed.check_shardable(n_points, info)
        x = x[distributed.shard(n_points, info)]  # each rank scores a contiguous shard
    torch.manual_seed(seed + 7919 * info.rank)
    start = time.perf_counter()
    if estimator == "gaps":
        return _told(callbacks, _gaps(trained, x, n_points, options, split, seed, start, out, units))
    try:
        est = _ESTIMATE[estimator](trained.vae, x, options, progress)
    except ConfigError:  # names the estimator already
        raise
    except ValueError as e:  # a setting the estimator cannot work with on this model
        raise ConfigError(f"estimator {estimator}: {e}") from None
    if info.enabled:
        est.diagnostics = combined_diagnostics(distributed.gather_objects((est.per_datapoint.numel(), est.diagnostics), info))
        est.per_datapoint = _gathered(est.per_datapoint, n_points, trained)
        est.settings["world_size"] = info.world_size
    if units is not None:
        est.diagnostics["active_units"] = units
    if save_chains is not None:
        write_atomically_with(save_chains, lambda tmp: est.chains.to_netcdf(str(tmp)))
    result = est.to_dict()
    if save_chains is not None:
        result["chains"] = str(save_chains)
    # log p(x) of every point, so that two runs scored on the same points compare point by point
    # (`pyro-vae compare`: the paired error of a difference is a fraction of each estimate's own)
    result["per_datapoint"] = est.per_datapoint.tolist()
    result.update(
        run=str(run_dir),
        split=split,
        seed=seed,
        seconds=round(time.perf_counter() - start, 3),
        data=trained.data.info,
        device=str(trained.device),
        hardware=hardware(trained.device),
        versions=versions(),
        trained_epochs=trained.epoch,
        trained_samples=trained.samples_seen,
    )
    return _told(callbacks, _written(result, Path(out), info.is_main))


def _told(callbacks: Sequence[Callback], result: Dict[str, Any]) -> Dict[str, Any]:
    """``result``, after every callback has been told of it."""
    for callback in callbacks:
        callback.on_evaluation_end(result)
        callback.close()
    return result


def _written(result: Dict[str, Any], path: Path, is_main: bool) -> Dict[str, Any]:
    """Write an evaluation's result as JSON (rank 0 only) and return it with its ``path``. A value
    that is no number is refused (it is not a log p(x)), and one that cannot be written is named
    in the error, so that the work is not lost."""
    value = result["value"]
    if not math.isfinite(value):
        raise EstimateError(
            f"the {result['estimator']} estimate came out as {value}: the model's log densities are not finite at some "
            "points (weights that hold NaN or inf, or a likelihood outside its support); nothing was written."
        )
    if is_main:
        try:
            write_text_atomically(path, json.dumps(result, indent=2, default=str))
        except OSError as e:
            raise EstimateError(
                f"{result['estimator']}: log p(x) = {value:.4f} +- {result['stderr']:.4f} nats (n={result['n']}) was computed "
                f"but cannot be written to {path} ({e.strerror or e}); free space there or pass --out elsewhere."
            ) from None
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


def _gathered(values: torch.Tensor, n_points: int, trained: TrainedRun) -> torch.Tensor:
    """Every rank's shard of per-datapoint values, in datapoint order: the values one process
    would have produced (itself, without torchrun)."""
    if not trained.dist.enabled:
        return values
    return distributed.gather_shards(values.to(trained.device), n_points, trained.dist).cpu()


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


def _gaps(trained: TrainedRun, x: torch.Tensor, n_points: int, options: EstimatorOptions, split: str, seed: int, start: float,
          out: Path, units: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """ELBO, IWAE-k and AIS side by side per datapoint, with the approximation and amortization gaps
    (``x``: this rank's shard of the ``n_points``; ``units``: the active units of all of them, or None)."""
    ais_options = {"num_chains": options.ais_chains, "schedule": options.ais_schedule, "start": options.ais_start}
    report = estimators.gap_report(trained.vae, x, k=options.k, ais_steps=options.ais_steps, memory_gb=options.memory_gb, **ais_options)
    if trained.dist.enabled:
        for name in GAP_REPORT_ESTIMATES:
            if name in report:
                report[name].per_datapoint = _gathered(report[name].per_datapoint, n_points, trained)
        report["per_datapoint"] = {name: _gathered(v, n_points, trained) for name, v in report["per_datapoint"].items()}
        report["summary"] = {name: float(v.mean()) for name, v in report["per_datapoint"].items()}
    estimates = {name: report[name].to_dict() for name in GAP_REPORT_ESTIMATES if name in report}
    per_point = {name: report[name].per_datapoint.tolist() for name in estimates}
    per_point.update({name: v.tolist() for name, v in report["per_datapoint"].items()})
    first = estimates["iwae"]
    if units is not None:
        first["diagnostics"]["active_units"] = units
    # the standard error of each mean gap over datapoints (the value is the amortization gap)
    stderr = {name: standard_error(v) for name, v in report["per_datapoint"].items()}
    settings = {"k": options.k, "ais_steps": options.ais_steps, **{f"ais_{key}": v for key, v in ais_options.items()}, "log_px_from": report["log_px_from"]}
    if trained.dist.enabled:
        settings["world_size"] = trained.dist.world_size
    result = {
        "estimator": "gaps", "value": report["summary"]["amortization_gap"], "stderr": stderr["amortization_gap"], "n": first["n"],
        "settings": settings, "summary": report["summary"], "summary_stderr": stderr, "estimates": estimates, "per_datapoint": per_point,
        "run": str(trained.run_dir), "split": split, "seed": seed, "seconds": round(time.perf_counter() - start, 3),
        "data": trained.data.info, "device": str(trained.device), "hardware": hardware(trained.device), "versions": versions(),
        "trained_epochs": trained.epoch,
    }
    return _written(result, Path(out), trained.dist.is_main)  # every rank holds the same gathered report


def _bdmc(trained: TrainedRun, n: int, options: EstimatorOptions, seed: int, progress: bool, out: Path | str) -> Dict[str, Any]:
    """BDMC (Grosse et al. 2015) on ``n`` points simulated from the trained model: forward AIS from
    the prior bounds each log p(x) from below, reverse AIS from the exact posterior sample from
    above (both stochastically). Their gap bounds the error of AIS with these settings on data like
    the model's own; where it is small, ``--estimator ais`` with the same settings can be trusted on
    real data about as far as the model fits them."""
    info = trained.dist
    distributed.check_shardable(n, info)
    local = distributed.shard(n, info)  # each rank simulates its share (all n in one process)
    torch.manual_seed(seed + 7919 * info.rank)
    start = time.perf_counter()
    report = estimators.bdmc(trained.vae, num_points=local.stop - local.start, num_steps=options.ais_steps,
                             num_chains=options.ais_chains, schedule=options.ais_schedule, progress=progress,
                             memory_gb=options.memory_gb)
    lower, upper = report["lower"], report["upper"]
    for est in (lower, upper):
        est.per_datapoint = _gathered(est.per_datapoint, n, trained)
    gap = upper.per_datapoint - lower.per_datapoint
    result = {
        "estimator": "bdmc", "value": lower.mean, "stderr": lower.stderr, "n": n,
        "settings": {**lower.settings, "points": "simulated from the model"},
        "lower": lower.to_dict(), "upper": upper.to_dict(),
        # Both bounds are stochastic (they hold in expectation), so a point's gap may come out negative:
        # the gap's standard error over points says how much of its mean is noise.
        "gap_mean": float(gap.mean()), "gap_stderr": standard_error(gap), "gap_max": float(gap.max()),
        "per_datapoint": {"lower": lower.per_datapoint.tolist(), "upper": upper.per_datapoint.tolist()},
        "run": str(trained.run_dir), "split": "simulated", "seed": seed, "seconds": round(time.perf_counter() - start, 3),
        "trained_on": trained.data.info, "device": str(trained.device), "hardware": hardware(trained.device), "versions": versions(),
        "trained_epochs": trained.epoch,
        "trained_samples": trained.samples_seen,
    }
    if info.enabled:
        result["settings"]["world_size"] = info.world_size
    return _written(result, Path(out), info.is_main)
