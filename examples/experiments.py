"""Helpers shared by the paper's experiments in ``examples/``: train a variant of a config,
choose log-spaced evaluation points, and write results as CSV and markdown tables."""

from __future__ import annotations

import argparse
import csv
import io
import math
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from pyro_vae.speed import allocator
from pyro_vae.cli import device_arg, seed_arg
from pyro_vae.config import RunConfig, load, parse_yaml, syntax_error_text
from pyro_vae.runs.checkpoint import CHECKPOINT_NAME
from pyro_vae.runs.compare import paired_difference
from pyro_vae.errors import ConfigError, PyroVAEError, TrainingError, one_line_warnings
from pyro_vae.files import write_text_atomically
from pyro_vae.runs.records import read_metrics as read_run_metrics
from pyro_vae.training.trainer import Trainer

Row = Dict[str, Any]


def variant(base: str | Path, overrides: Sequence[str], data: Optional[str] = None) -> RunConfig:
    """The config ``base`` with ``--set``-style overrides; ``data`` (a YAML mapping) replaces the
    data section, e.g. ``"{name: npz, path: small.npz, binarize: static}"`` for a quick run."""
    extra = []
    if data:  # first, so that later overrides (data.n_train=...) apply to the new section
        try:
            mapping = parse_yaml(data)
        except yaml.YAMLError as e:
            raise ConfigError(f"--data {data!r} is not valid YAML: {syntax_error_text(e)}") from None
        if not isinstance(mapping, dict):
            raise ConfigError(f"--data must be a YAML mapping such as \"{{name: npz, path: small.npz}}\", got {data!r}")
        extra.append("data=" + yaml.safe_dump(mapping, default_flow_style=True).strip())
    return load(base, extra + list(overrides))


def train(config: RunConfig, run_dir: Path, on_epoch_end: Optional[Callable[[Trainer, Row], None]] = None) -> Tuple[Trainer, Optional[str]]:
    """Train ``config`` into ``run_dir`` (see :func:`train_to_end`): the trainer and why it stopped
    early (None when it ran to its end)."""
    trainer = Trainer(config, run_dir, progress=False)
    return trainer, train_to_end(trainer, on_epoch_end)


def train_to_end(trainer: Trainer, on_epoch_end: Optional[Callable[[Trainer, Row], None]] = None) -> Optional[str]:
    """Train to the config's end; a finished or interrupted run in the folder is resumed, not redone.

    One run that diverges (wake-sleep at some latent sizes, a learning rate too high for one model)
    should not end a sweep of the paper's experiments: on a :class:`TrainingError` the trainer goes
    back to its last good checkpoint, a warning names the run, and the reason is returned for the
    figure's notes (None when training ran to its end). Running the script again retrains from that
    checkpoint and meets the same divergence (the random states are restored). A run that diverged
    before its first checkpoint has nothing to show: that error is raised."""
    checkpoint = trainer.run_dir / CHECKPOINT_NAME
    try:
        trainer.train(resume=checkpoint.exists(), on_epoch_end=on_epoch_end)
        return None
    except TrainingError as e:
        if not checkpoint.exists():
            raise
        trainer.resume()
        reason = f"stopped after {trainer.samples_seen} training samples (epoch {trainer.epoch}): {e.reason}"
        warnings.warn(f"pyro-vae: run {trainer.config.name} {reason}; it is shown up to there, and the other runs go on", stacklevel=2)
        return reason


PAPER_STEP_SIZES = (0.01, 0.02, 0.1)  # AEVB Sec. 5: Adagrad's step size chosen from these


def choose_step_size(config: RunConfig, runs: Path, step_sizes: Sequence[float], pilot_budget: int) -> Tuple[float, Dict[float, float]]:
    """The paper's protocol (AEVB Sec. 5): for one method and latent size, a short pilot run at
    each candidate step size, and the one with the best training-set bound after ``pilot_budget``
    samples. The pilots are run folders of their own (``<runs>/<name>_pilot_lr<lr>``), resumed
    when the script runs again. Returns the choice and every pilot's final train bound (a pilot
    that diverged scores minus infinity)."""
    scores: Dict[float, float] = {}
    for lr in step_sizes:
        pilot = config.model_copy(deep=True, update={"name": f"{config.name}_pilot_lr{lr:g}"})
        pilot.optimizer = pilot.optimizer.model_copy(update={"lr": lr})
        # bounds measured once, at the pilot's end: the choice needs no curve
        pilot.training = pilot.training.model_copy(update={"sample_budget": int(pilot_budget), "epochs": None, "eval_every": 10**9,
                                                           "eval_train_points": pilot.training.eval_train_points or 1000})
        _, stopped = train(pilot, runs / pilot.name)
        rows = read_metrics(runs / pilot.name)
        bound = float(rows[-1]["train_elbo"]) if rows else -math.inf
        scores[lr] = -math.inf if stopped or not math.isfinite(bound) else bound
    return max(scores, key=lambda lr: scores[lr]), scores


def step_size_note(method: str, z: Any, chosen: float, scores: Dict[float, float], pilot_budget: int) -> str:
    """One line of a figure's notes: the pilots' train bounds and the step size chosen."""
    tried = ", ".join(f"{lr:g}: {score:.2f}" for lr, score in scores.items())
    return f"Step size of {method}, Nz = {z}: {chosen:g} (train bound after {pilot_budget} samples at each: {tried})."


def add_step_size_arguments(parser: argparse.ArgumentParser) -> None:
    """``--step-sizes`` (the candidates, or none to keep the config's) and ``--pilot-budget``."""
    parser.add_argument("--step-sizes", type=float, nargs="*", default=list(PAPER_STEP_SIZES),
                        help="Adagrad step sizes tried in pilot runs for each method and latent size, the best by training "
                             "bound kept (the paper's protocol; default 0.01 0.02 0.1); give none to keep the config's 0.02")
    parser.add_argument("--pilot-budget", type=float, default=2e4, help="training samples of each pilot run (default 2e4)")


def stopped_notes(stopped: Dict[str, Optional[str]]) -> List[str]:
    """Lines for a figure's notes: each run that stopped early (run name -> reason, or None for a
    run that ran to its end)."""
    return [f"Stopped early, shown up to there: {name} {reason}." for name, reason in stopped.items() if reason]


def command_text(args: argparse.Namespace, script: str, flags: str = "") -> str:
    """The command that made a figure, for its notes: as typed (``run_script`` records it), else
    (``main`` called from Python) the script with ``flags`` and the budget."""
    return getattr(args, "command", None) or " ".join(filter(None, ["python", f"examples/{script}", flags, f"--budget {int(args.budget)}"]))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every example takes besides its own: ``--seed``, ``--data``, ``--set``, ``--device``."""
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--data", help="YAML mapping replacing the data section (e.g. a small npz for a quick check)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:N or auto (default: the config's, auto)")


def run_script(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> None:
    """Parse an example's flags and run ``main`` as the ``pyro-vae`` command runs its work: freed
    memory kept (this process is ours, see allocator.py), and a bad config, data set or run folder
    reported as one error line (exit 2), not a traceback."""
    args = parser.parse_args()
    args.command = "python " + shlex.join(sys.argv)  # as typed, for the figure's notes
    if getattr(args, "device", None) and hasattr(args, "set"):  # the examples that train from a config
        args.set.append(f"device={args.device}")
    allocator.keep_freed_memory()
    one_line_warnings()
    try:
        main(args)
    except PyroVAEError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")


def paired_text(base: Optional[Sequence[float]], other: Optional[Sequence[float]]) -> str:
    """``other - base`` over the same points, ``+1.23 +- 0.04`` (the mean of the per-point differences
    with its paired standard error), or empty where there is nothing to pair (a missing side, rows
    saved without per-point values, other points)."""
    if not base or not other or len(base) != len(other):
        return ""
    paired = paired_difference(base, other)
    return f"{paired['difference']:+.2f} +- {paired['stderr']:.2f}"


def log_points(budget: int, first: int, per_decade: int = 4) -> List[int]:
    """Training-sample counts, log-spaced from ``first`` to ``budget`` (both included)."""
    if budget <= first:
        return [budget]
    n = max(1, int(math.ceil(per_decade * math.log10(budget / first))))
    return sorted({int(round(first * (budget / first) ** (i / n))) for i in range(n + 1)})


def read_metrics(run_dir: Path) -> List[Row]:
    """The readable rows of a run's metrics.csv (see ``train.read_metrics``)."""
    return read_run_metrics(Path(run_dir) / "metrics.csv")[0]


def write_csv(rows: Iterable[Row], path: Path) -> Path:
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: List[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    write_text_atomically(path, text.getvalue())
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def write_markdown(rows: Iterable[Row], columns: Sequence[str], path: Path, title: str, notes: Sequence[str] = ()) -> Path:
    lines = [f"# {title}", ""] + [f"{n}" for n in notes] + ([""] if notes else [])
    lines += ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path
