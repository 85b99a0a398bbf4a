"""What a run folder holds, in a few lines: its model and objective, how far it trained, and every
log p(x) estimate written beside it (``pyro-vae show``).

An evaluation's file is named by its settings (``evaluate.default_output_name``), so a run gathers
several: IWAE at two values of k, AIS on a subset, another seed. This reads them all back, from
the JSON files and ``metrics.csv`` alone (no model is built and nothing is unpickled), and lists
each with its estimator settings and standard error.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from pyro_vae.errors import CheckpointError, not_a_run_folder

# settings that say how an estimate was computed, not what it is (left out of the one-line listing)
_HOW = ("memory_gb", "chunk_particles", "chunk_datapoints", "world_size")


def _component(section: Dict[str, Any]) -> str:
    """``name(option=value, ...)``, leaving out options set to None (off)."""
    options = ", ".join(f"{k}={v}" for k, v in section.items() if k != "name" and v is not None)
    return f"{section.get('name')}({options})" if options else str(section.get("name"))


def _last_metrics(run_dir: Path) -> Optional[Dict[str, str]]:
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    return rows[-1] if rows else None


def _number(text: Optional[str]) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _optimizer(section: Dict[str, Any]) -> str:
    section = dict(section)
    schedule = section.pop("schedule", None) or {}
    text = _component(section)
    if schedule.get("name", "none") != "none":
        text += f", lr schedule {_component(schedule)}"
    return text


def _estimate_line(name: str, result: Dict[str, Any], epoch: Optional[int]) -> str:
    settings = {k: v for k, v in (result.get("settings") or {}).items() if k not in _HOW}
    described = ", ".join(f"{k}={v}" for k, v in settings.items())
    where = f"{result.get('split', '?')}, n={result.get('n', '?')}"
    if result.get("split") != "simulated":  # points drawn from the model have no binarization of their own
        where += f", binarize {(result.get('data') or {}).get('binarize', '?')}"
    where += f", seed {result.get('seed', '?')}"
    estimator = result.get("estimator", "?")
    if estimator == "gaps":
        summary = result.get("summary") or {}
        value = (f"amortization gap {result['value']:.3f} +- {result['stderr']:.3f}, approximation gap "
                 f"{summary.get('approximation_gap', math.nan):.3f} (log p(x) from {settings.get('log_px_from', '?')})")
    elif estimator == "bdmc":
        value = (f"AIS {result['lower']['value']:.3f} <= log p(x) <= reverse AIS {result['upper']['value']:.3f}, "
                 f"gap {result['gap_mean']:.3f} +- {result['gap_stderr']:.3f}")
    else:
        value = f"log p(x) = {result['value']:.3f} +- {result['stderr']:.3f}"
    diagnostics = result.get("diagnostics") or {}
    if "datapoints_rhat_above" in diagnostics:  # App. D: where its chains disagree it may come out low
        value += f", chains disagree (R-hat > {diagnostics['rhat_threshold']:g}) at {diagnostics['datapoints_rhat_above']} of {result.get('n', '?')}"
    trained = result.get("trained_epochs")
    stale = f", of the model at epoch {trained}" if epoch is not None and trained is not None and trained != epoch else ""
    return f"  {estimator} on {where}: {value} [{described}]  ({name}{stale})"


def _trained_on(run_dir: Path) -> str:
    """``, on cpu (Intel Xeon, AVX512 kernels)`` from run.json: the last digits of a run's numbers
    depend on the kernels that rounded them (``train.hardware``). Empty where run.json is missing or
    older than that record."""
    try:
        info = json.loads((run_dir / "run.json").read_text())
        hardware = info.get("hardware") or {}
    except (OSError, ValueError, AttributeError):
        return ""
    if not isinstance(hardware, dict) or not (hardware.get("cpu") or hardware.get("gpu")):
        return ""
    if hardware.get("gpu"):
        return f", on {info.get('device')} ({hardware['gpu']}, CUDA {hardware.get('cuda')})"
    kernels = f", {hardware['torch_cpu_kernels']} kernels" if hardware.get("torch_cpu_kernels") else ""
    return f", on {info.get('device')} ({hardware['cpu']}{kernels})"


def run_summary(run_dir: Path | str) -> str:
    """The summary ``pyro-vae show`` prints for the run in ``run_dir``.

    :raises CheckpointError: if the folder holds no run (no ``config.yaml``).
    """
    run_dir = Path(run_dir)
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except OSError:
        raise not_a_run_folder(run_dir) from None
    except yaml.YAMLError as e:
        raise CheckpointError(f"{run_dir / 'config.yaml'} is not valid YAML ({e}); was it edited by hand?") from None
    model, data = config.get("model") or {}, config.get("data") or {}
    lines = [
        f"run {run_dir} ({config.get('name')}): data {data.get('name')} (binarize {data.get('binarize')}), z_dim {model.get('z_dim')}",
        f"  model: prior {_component(model.get('prior', {}))}, likelihood {_component(model.get('likelihood', {}))}, "
        f"guide {_component(model.get('guide', {}))}",
        f"  networks: encoder {_component(model.get('encoder', {}))}, decoder {_component(model.get('decoder', {}))}",
        f"  objective {_component(config.get('objective', {}))}, optimizer {_optimizer(config.get('optimizer', {}))}",
    ]
    last = _last_metrics(run_dir)
    epoch: Optional[int] = None
    if last is None:
        lines.append("trained: no epoch finished yet (no metrics.csv rows)")
    else:
        epoch = int(_number(last.get("epoch"))) if math.isfinite(_number(last.get("epoch"))) else None
        test_elbo, stderr = _number(last.get("test_elbo")), _number(last.get("test_elbo_stderr"))
        elbo = f", test ELBO {test_elbo:.3f} +- {stderr:.3f} nats per datapoint" if math.isfinite(test_elbo) else ""
        lines.append(f"trained: to epoch {last.get('epoch')}, {last.get('samples_seen')} samples{elbo}{_trained_on(run_dir)}")
    estimates: List[str] = []
    unreadable: List[str] = []
    for path in sorted(run_dir.glob("eval_*.json")):
        try:
            estimates.append(_estimate_line(path.name, json.loads(path.read_text()), epoch))
        except (OSError, ValueError, KeyError, TypeError):
            unreadable.append(path.name)
    if estimates:
        lines.append("estimates:")
        lines.extend(estimates)
    else:
        lines.append("estimates: none yet (pyro-vae evaluate " + str(run_dir) + ")")
    if unreadable:
        lines.append(f"not read (not an evaluation pyro-vae wrote, or damaged): {', '.join(unreadable)}")
    return "\n".join(lines)
