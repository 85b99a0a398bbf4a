"""Two log p(x) estimates of the same datapoints, compared point by point (``pyro-vae compare``).

Two models scored on the same test points are compared best by the mean of their per-datapoint
differences, with the standard error of that mean::

    d_i = log p_B(x_i) - log p_A(x_i),    B - A = mean_i d_i  +-  std_i(d_i) / sqrt(n)

Most of each estimate's own standard error is the spread of log p(x) over the points (some digits
are harder than others for every model), which cancels in d_i: on MNIST the paired error of two
models' IWAE-5000 difference is a fraction of the 0.3 nats each carries alone. Pairing needs the
same points, so the two evaluations must have scored the same split, the same first n points of it
and the same data (fingerprint and binarization); anything else is refused with what differs.

The paired error covers the Monte Carlo noise of both estimates and which points were drawn; it is
the error of a difference between these two trained models, not of how far another training seed
would move either. Reads the evaluations' JSON files only: nothing is built and nothing is unpickled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from pyro_vae.errors import ConfigError
from pyro_vae.estimators.result import standard_error

# The data settings two evaluations must share for their points to be the same points.
_SAME_POINTS = ("binarize", "binarize_seed", "test_binarization")


def read_evaluation(path: Path | str) -> Dict[str, Any]:
    """An evaluation's JSON with its per-datapoint log p(x) (a list of n numbers).

    :raises ConfigError: if the file is missing, is not an evaluation pyro-vae wrote, or holds no
        per-datapoint values (a gap report, BDMC's simulated points, or a file written before
        evaluations kept them)."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}; pass an eval_*.json file that `pyro-vae evaluate` wrote.") from None
    except ValueError as e:
        raise ConfigError(f"{path} is not JSON ({e}); pass an eval_*.json file that `pyro-vae evaluate` wrote.") from None
    if not isinstance(result, dict) or "estimator" not in result or "n" not in result:
        raise ConfigError(f"{path} is not an evaluation pyro-vae wrote (no estimator or n); pass an eval_*.json file.")
    if result["estimator"] in ("gaps", "bdmc") or result.get("split") == "simulated":
        raise ConfigError(f"{path} is a {result['estimator']} report: compare reads one log p(x) estimate per point "
                          "(iwae, ais, hmc, elbo or exact); bdmc's points are simulated from each model and are not shared.")
    values = result.get("per_datapoint")
    if not isinstance(values, list) or len(values) != result["n"]:
        raise ConfigError(f"{path} holds no per-datapoint values (written before evaluations kept them); run the same "
                          "`pyro-vae evaluate` again to write them.")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ConfigError(f"{path}: per_datapoint must hold one finite number per point; the file was altered. Run the "
                          "same `pyro-vae evaluate` again to write it anew.")
    result["path"] = str(path)
    return result


def _same_points_problems(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    problems = []
    if a.get("split") != b.get("split"):
        problems.append(f"split {a.get('split')} / {b.get('split')}")
    if a["n"] != b["n"]:
        problems.append(f"n {a['n']} / {b['n']} (the first n points of the split: pass --n alike)")
    data_a, data_b = a.get("data") or {}, b.get("data") or {}
    split = a.get("split")
    fingerprint_a, fingerprint_b = (d.get("fingerprint", {}).get(split) for d in (data_a, data_b))
    if fingerprint_a != fingerprint_b:
        problems.append(f"data fingerprint of the {split} split {fingerprint_a} / {fingerprint_b} (other data, or another n_{split})")
    for key in _SAME_POINTS:
        if data_a.get(key) != data_b.get(key):
            problems.append(f"data.{key} {data_a.get(key)} / {data_b.get(key)}")
    return problems


def _describe(result: Dict[str, Any]) -> str:
    settings = result.get("settings") or {}
    main = {k: v for k, v in settings.items() if k in ("k", "num_steps", "num_chains", "num_samples", "start")}
    described = ", ".join(f"{k}={v}" for k, v in main.items())
    return f"{result['estimator']}{f' ({described})' if described else ''} of {result.get('run', '?')}"


def compare(path_a: Path | str, path_b: Path | str) -> Dict[str, Any]:
    """B - A over the same datapoints: the mean difference with its paired standard error, the
    unpaired error it replaces, and at how many points B is higher.

    :raises ConfigError: if either file cannot be compared or the two scored different points."""
    a, b = read_evaluation(path_a), read_evaluation(path_b)
    problems = _same_points_problems(a, b)
    if problems:
        raise ConfigError(f"{a['path']} and {b['path']} did not score the same points ({'; '.join(problems)}), so their "
                          "log p(x) cannot be compared point by point; evaluate both runs on the same split and --n.")
    n = a["n"]
    unpaired = math.sqrt(a["stderr"] ** 2 + b["stderr"] ** 2) if n > 1 else math.nan
    return {"a": a, "b": b, "n": n, "split": a.get("split"), "unpaired_stderr": unpaired,
            **paired_difference(a["per_datapoint"], b["per_datapoint"])}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Dict[str, Any]:
    """``difference``: mean_i (b_i - a_i) over points scored by both; ``stderr``: its standard error,
    std_i(b_i - a_i) / sqrt(n) (NaN for one point); ``b_higher``, ``b_lower``: at how many points."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values need the same points: got {len(a)} and {len(b)}")
    diffs = torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64)
    return {"difference": float(diffs.mean()), "stderr": standard_error(diffs), "b_higher": int((diffs > 0).sum()),
            "b_lower": int((diffs < 0).sum())}


def comparison_text(c: Dict[str, Any]) -> str:
    """What ``pyro-vae compare`` prints."""
    a, b = c["a"], c["b"]
    data = a.get("data") or {}
    lines = [
        f"compare on {c['split']}, n={c['n']} (the same points: data {data.get('fingerprint', {}).get(c['split'], '?')}, "
        f"binarize {data.get('binarize', '?')})",
        f"  A: {_describe(a)}: {a['value']:.3f} +- {a['stderr']:.3f}  ({a['path']})",
        f"  B: {_describe(b)}: {b['value']:.3f} +- {b['stderr']:.3f}  ({b['path']})",
        f"  B - A: {c['difference']:.3f} +- {c['stderr']:.3f} nats per datapoint, paired over the same points "
        f"(unpaired the error would be {c['unpaired_stderr']:.3f}); B higher at {c['b_higher']} of {c['n']} points, "
        f"lower at {c['b_lower']}",
    ]
    if a["estimator"] != b["estimator"]:
        lines.append(f"  note: different estimators ({a['estimator']}, {b['estimator']}): the difference mixes the models' "
                     "log p(x) with the estimators' own gaps (IWAE-k and the ELBO are lower bounds)")
    return "\n".join(lines)
