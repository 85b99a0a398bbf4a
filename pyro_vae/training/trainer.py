"""The training loop: SGVB / SVI steps on minibatches, metrics, checkpoints and exact resume.

One step: ``loss = objective.loss(vae, x_batch, idx, N)`` (an unbiased estimate of the negative
full-data objective), backward, one optimizer step over all parameters (MCEM takes several steps
per minibatch through ``objective.step_losses``). Data lives on the device
for the whole run; the loss is read back to the host only every ``training.log_every`` steps (for
the progress bar and the NaN check), never per step.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae import distributed
from pyro_vae.config import RunConfig, TrainingConfig, load as load_config, save as save_config
from pyro_vae.config.build import dataset_from_config, objective_from_config, optimizer_from_config, vae_from_config
from pyro_vae.data.datasets import Dataset, binarize, binarize_dynamic, check_support
from pyro_vae.errors import CheckpointError, ConfigError, PyroVAEError, TrainingError, warn
from pyro_vae.estimators.result import standard_error
from pyro_vae.files import exclusive_lock, folder_path, write_text_atomically
from pyro_vae.hardware import hardware, resolve_device, versions
from pyro_vae.mcmc import potentials
from pyro_vae.model import VAE, set_validation, without_param_store
from pyro_vae.objectives.base import Objective
from pyro_vae.runs.load import TrainedRun
from pyro_vae.runs.records import (
    CONFIG_NAME, METRIC_FIELDS, METRICS_NAME, RUN_RECORD_NAME, check_new_run_folder, config_changes, data_changes, read_metrics,
)
from pyro_vae.speed import allocator, fused_linear
from pyro_vae.tracking import Callback, TensorBoardLogger
from pyro_vae.training.cuda_graphs import GraphedStep, check_capturable
from pyro_vae.traces import log_importance_weights
from pyro_vae.runs.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint

@without_param_store
@torch.no_grad()
def elbo_per_datapoint(vae: VAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Monte Carlo ELBO (one sample of q per datapoint): log p(x, z) - log q(z|x), per datapoint."""
    out = [log_importance_weights(vae.model, vae.guide, xb, num_particles=1)[0] for xb in x.split(batch_size)]
    return torch.cat(out)


def warn_if_full_batch(batch_size: int, num_train: int) -> None:
    """Say so when a minibatch would hold the whole training set: every step then takes the same
    points (only the order within the batch changes), which a config written for a larger data
    set (a subset via ``data.n_train``, a small npz) does without anyone having asked for it."""
    if batch_size > num_train:
        warn(
            f"pyro-vae: training.batch_size {batch_size} is larger than the training set ({num_train} points): "
            f"every step takes all {num_train} (full-batch gradients, one step per epoch). Set training.batch_size "
            f"to at most {num_train} for minibatch SGVB.")


def warn_if_budget_below_one_batch(sample_budget: Optional[int], batch_size: int, num_train: int) -> None:
    """Say so when ``training.sample_budget`` is smaller than one minibatch: training takes whole
    minibatches, so it stops after the first, having seen more samples than the budget (the
    metrics record the samples actually seen)."""
    batch = min(batch_size, num_train)
    if sample_budget is not None and sample_budget < batch:
        warn(
            f"pyro-vae: training.sample_budget {sample_budget} is smaller than one minibatch ({batch} points): "
            f"training stops after the first minibatch, at {batch} samples seen. Set training.batch_size to at most "
            f"{sample_budget}, or a budget of at least {batch}.")


class Trainer:
    """Builds everything a run needs from its config and trains it, writing into ``run_dir``.

    :param config: a ``RunConfig`` (:func:`pyro_vae.config.load`), or what that reads (a shipped
        config's name, a config file, a run folder), or a dict of the config's sections.
    :param data: an already-loaded data set (tests, examples); loaded from the config otherwise.
    :param progress: show a progress bar during each epoch.
    :param epoch_lines: print one line per epoch (default: as ``progress``); the command line prints
        them with or without bars.
    :param callbacks: called at the end of each epoch (:class:`~pyro_vae.tracking.Callback`); a
        TensorBoard logger is added when the config's ``logging.tensorboard`` asks for one.
    """

    def __init__(
        self, config: RunConfig | str | Path | Mapping[str, Any], run_dir: Path | str, data: Optional[Dataset] = None,
        progress: bool = True, dist_info: Optional[distributed.DistInfo] = None, epoch_lines: Optional[bool] = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.config = config = load_config(config)
        self.run_dir = folder_path(run_dir, "the run folder (--run-dir)")  # before any data is loaded
        self.dist = dist_info if dist_info is not None else distributed.from_env()
        self.progress = progress and self.dist.is_main
        self.epoch_lines = (progress if epoch_lines is None else epoch_lines) and self.dist.is_main
        self.callbacks = list(callbacks)
        tensorboard = config.logging.tensorboard
        if tensorboard and self.dist.is_main:
            self.callbacks.append(TensorBoardLogger(self.run_dir / "tensorboard" if tensorboard is True else Path(tensorboard)))
        self.device = resolve_device(config.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        distributed.check_batch(self.dist, config.training.batch_size)
        distributed.init(self.dist, self.device)
        set_validation(config.training.validate_distributions)
        pyro.clear_param_store()  # pyro.module would otherwise reuse a previous model's parameters
        torch.manual_seed(config.seed)

        self.data = data if data is not None else dataset_from_config(config.data)
        self.vae = vae_from_config(config.model, self.data.x_shape).to(self.device)
        check_support(self.data, self.vae.likelihood, config.data.binarize, config.model.likelihood.name)
        self.objective: Objective = objective_from_config(config.objective)
        self.objective.check(self.vae)
        # Our optimizer holds the parameters; Pyro's param store is needed only by JIT objectives.
        self.vae.register_params = self.objective.needs_param_store
        self.optimizer, self.scheduler = optimizer_from_config(
            config.optimizer, list(self.vae.parameters()), config.objective.weight_prior_std
        )
        if config.training.cuda_graphs:
            check_capturable(self.device, self.objective, self.optimizer, self.dist.enabled)
        self._graphed: Optional[GraphedStep] = None  # made at the first step (after any resume)
        self._params = list(self.vae.parameters())  # loading a checkpoint copies into these tensors
        self.x_train = self.data.x_train.to(self.device)
        self.x_test = self.data.x_test.to(self.device)
        # A fixed slice of the training set for train-ELBO evaluations (binarized once if dynamic).
        self.x_train_eval = self.x_train[: config.training.eval_train_points]
        if config.data.binarize == "dynamic" and config.training.eval_train_points:
            self.x_train_eval = binarize(self.x_train_eval, config.data.binarize_seed)
        self.shuffle_generator = torch.Generator().manual_seed(config.seed + 1)  # the same on every rank
        if self.dist.enabled:
            if not self.objective.supports_distributed:
                raise ConfigError(
                    f"objective {self.objective.name!r} keeps per-datapoint state (MCEM's chains) and is not supported "
                    "in distributed training yet; run it in one process."
                )
            if self.x_train.shape[0] < self.dist.world_size:  # every global minibatch would be trimmed away
                raise ConfigError(
                    f"{self.x_train.shape[0]} training point(s) cannot be shared by {self.dist.world_size} processes; "
                    "train on more points or start fewer processes."
                )
            # Initialisation above is identical on every rank (same seed); sampling noise must not be.
            torch.manual_seed(config.seed + 1_000_003 * (self.dist.rank + 1))
        self.epoch = 0
        self._saved_epoch = 0  # epoch of the checkpoint on disk (named when training must stop)
        self.step = 0
        self.samples_seen = 0
        self.wall_seconds = 0.0

    def trained_run(self) -> TrainedRun:
        """The model as trained so far, as :func:`~pyro_vae.runs.load.load_run` would load it from
        the run folder (for ``train --evaluate``, which scores it without reading it back)."""
        self.vae.eval()
        return TrainedRun(self.run_dir, self.config, self.data, self.vae, self.device, self.epoch, self.samples_seen, self.dist)

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        state = {
            "vae": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": self.epoch,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "wall_seconds": self.wall_seconds,
            "torch_rng": torch.get_rng_state(),
            "rank_rngs": self._rank_rngs(),
            "shuffle_rng": self.shuffle_generator.get_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "objective": self.objective.state_dict(),
            "config": self.config.to_dict(),
            "x_shape": list(self.data.x_shape),
            "data_fingerprint": self.data.info.get("fingerprint"),  # checked at resume and load, as run.json's
        }
        return state

    def _rank_rngs(self) -> Optional[List[Any]]:
        """Every rank's RNG states (collective: all ranks must call it), for exact distributed resume."""
        if not self.dist.enabled:
            return None
        mine = [torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None]
        return distributed.gather_objects(mine, self.dist)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        try:
            self.vae.load_state_dict(state["vae"])
            self.optimizer.load_state_dict(state["optimizer"])
            self._graphed = None  # a captured step holds the optimizer's former state tensors
            if self.scheduler and state.get("scheduler"):
                self.scheduler.load_state_dict(state["scheduler"])
            self.objective.load_state_dict(state.get("objective") or {})
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"the checkpoint does not fit this config's model/optimizer ({e}). Resume with the run's own "
                "config.yaml, or start a new run folder."
            ) from e
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.samples_seen, self.wall_seconds = int(state["samples_seen"]), float(state["wall_seconds"])
        try:
            torch.set_rng_state(state["torch_rng"])
            self.shuffle_generator.set_state(state["shuffle_rng"])
        except (RuntimeError, TypeError) as e:
            raise CheckpointError(f"the checkpoint's random-number states are damaged ({e}); restore the file or retrain.") from e
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        rank_rngs = state.get("rank_rngs")
        if self.dist.enabled:
            if not rank_rngs or len(rank_rngs) != self.dist.world_size:
                raise CheckpointError(
                    f"the checkpoint was written by {len(rank_rngs) if rank_rngs else 1} process(es), this job has "
                    f"{self.dist.world_size}; resume with the same number of processes."
                )
            cpu_rng, cuda_rng = rank_rngs[self.dist.rank]
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(cuda_rng, self.device)

    def resume(self, allow_changes: bool = False) -> Dict[str, Any]:
        """Restore the run folder's checkpoint into this trainer.

        Only the settings in ``config.RESUMABLE_SETTINGS`` may differ from the checkpoint's, and the
        data must be what run.json recorded; otherwise a CheckpointError names the differences,
        unless ``allow_changes``. Returns the differences (``{key: (old, new)}``)."""
        state = load_checkpoint(self.run_dir / CHECKPOINT_NAME)
        changes = {**config_changes(state.get("config"), self.config), **data_changes(self.run_dir, self.data.info, state)}
        if changes and not allow_changes:
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
            raise CheckpointError(
                f"the run in {self.run_dir} was trained with other settings ({listed}). Resuming under them "
                "would leave its config.yaml describing only the part trained afterwards. Resume with the "
                "run's own settings (only training length, logging, checkpointing, device, data.root and "
                "evaluation may change), start a new run folder, or pass --allow-changes (Python: "
                "train(resume=True, allow_changes=True)) to continue anyway; the changes are then recorded "
                "in run.json."
            )
        self.load_state_dict(state)
        return changes

    def save(self) -> None:
        state = self.state_dict()  # collective in distributed mode: every rank builds it
        if self.dist.is_main:
            save_checkpoint(state, self.run_dir / CHECKPOINT_NAME)
        distributed.barrier(self.dist)

    # --- training ------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once the config's epochs or sample budget are reached."""
        return self.stop_reason() is not None

    def stop_reason(self) -> Optional[str]:
        """Why training is over ("epochs done", "sample budget reached"), or None while it is not."""
        t = self.config.training
        if t.sample_budget is not None and self.samples_seen >= t.sample_budget:
            return "sample budget reached"
        if t.epochs is not None and self.epoch >= t.epochs:
            return "epochs done"
        return None

    def _write_metrics(self, row: Dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        path = self.run_dir / METRICS_NAME
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)

    def _check_finite(self, value: float, where: str) -> None:
        if not math.isfinite(value):
            self._stop_diverged(f"the loss became {value} ({where})")

    def _stop_diverged(self, what: str) -> NoReturn:
        ckpt = self.run_dir / CHECKPOINT_NAME
        cfg = self.config
        sgd = ""
        if cfg.optimizer.name == "sgd":
            # the loss is the whole training set's negative ELBO (Pyro's convention): its gradient,
            # and with it sgd's step, grows with N; adaptive optimizers divide that scale out
            sgd = (f"sgd's step is lr times the gradient of the negative ELBO of all N = {self.x_train.shape[0]} training "
                   "points, so its lr has to shrink with N; adagrad and adam do not depend on that scale")
        lr = self.optimizer.param_groups[0].get("lr")  # as the schedule has it now, not as configured
        notes = "; ".join(([f"now {lr:g}"] if isinstance(lr, (int, float)) else []) + ([sgd] if sgd else []))
        remedies = [f"a smaller optimizer.lr{f' ({notes})' if notes else ''}"]
        # only the remedies this run does not use already
        if cfg.optimizer.name != "clipped_adam":
            remedies.append("optimizer clipped_adam")
        if cfg.objective.weight_prior_std is None:
            remedies.append("a weight prior (objective.weight_prior_std: 1.0)")
        likelihood = self.vae.likelihood
        if getattr(likelihood, "min_std", None) == 0 and getattr(likelihood, "variance", "fixed") != "fixed":
            remedies.append("a floor on the decoder's standard deviation (model.likelihood.min_std, say 0.01)")
        if ckpt.exists():
            kept = f"the last good checkpoint ({ckpt}, epoch {self._saved_epoch}) is kept"
            restart = ("`--resume --allow-changes` with the new settings continues from it (the changes are recorded in "
                       "run.json), or start a new --run-dir")
        else:
            kept = "no checkpoint had been written yet"
            restart = "the folder holds no checkpoint, so the same command with the new settings starts it afresh"
        raise TrainingError(
            f"{what}; training stopped and {kept}. Try {', '.join(remedies[:-1])}{' or ' if len(remedies) > 1 else ''}"
            f"{remedies[-1]}; {restart}.",
            reason=what,
        )

    def prepare_run_dir(self, resume: bool, allow_changes: bool = False) -> bool:
        """Check the folder (and, to resume, the checkpoint), write config.yaml and run.json.
        Returns whether a resume goes on under changed settings (``allow_changes``)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt = self.run_dir / CHECKPOINT_NAME
        changes: Dict[str, Any] = {}
        if resume:
            changes = self.resume(allow_changes)
            # Metrics past the checkpoint (written before a crash) would be repeated: drop them.
            self._truncate_metrics()
        elif ckpt.exists():
            raise CheckpointError(
                f"{self.run_dir} already holds a run (checkpoint.pt). Pass --resume (from Python, train(resume=True)) "
                "to continue it, or choose another --run-dir."
            )
        else:
            check_new_run_folder(self.run_dir)
            if (self.run_dir / METRICS_NAME).exists() and self.dist.is_main:
                (self.run_dir / METRICS_NAME).unlink()
        distributed.barrier(self.dist)  # every rank has checked the folder before rank 0 writes to it
        if not self.dist.is_main:
            return bool(changes)
        info = {
            **versions(),
            "device": str(self.device),
            "hardware": hardware(self.device),  # the kernels that rounded this run's numbers
            "data": self.data.info,
            "x_shape": list(self.data.x_shape),
            "num_parameters": sum(p.numel() for p in self.vae.parameters()),
            "world_size": self.dist.world_size,
            # oneDNN's fused Linear + activation for MLPs on CPU (PYRO_VAE_FUSED_LINEAR)
            "fused_linear": self.device.type == "cpu" and fused_linear.enabled(),
            # HMC potentials (AIS, App. D, MCEM) compiled per shape where faster (PYRO_VAE_COMPILE_POTENTIALS)
            "compile_potentials": self.device.type == "cpu" and potentials.switched_on(),
            # glibc keeps freed CPU memory for reuse (PYRO_VAE_KEEP_FREED_MEMORY; set by the CLI)
            "keep_freed_memory": allocator.state(),
            # settings changed at resumes (--allow-changes): config.yaml holds the latest ones
            "resumed_with_changes": self._change_history(changes) if resume else [],
        }
        # run.json first: it marks the folder as a run's (records.check_new_run_folder)
        write_text_atomically(self.run_dir / RUN_RECORD_NAME, json.dumps(info, indent=2, default=str))
        save_config(self.config, self.run_dir / CONFIG_NAME)
        return bool(changes)

    def _change_history(self, changes: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The run's earlier records of changed settings (from run.json), plus this resume's."""
        history: List[Dict[str, Any]] = []
        try:
            history = list(json.loads((self.run_dir / RUN_RECORD_NAME).read_text()).get("resumed_with_changes") or [])
        except (OSError, ValueError, AttributeError):
            pass  # a new run, or no readable run.json: nothing to carry over
        if changes:
            history.append({"epoch": self.epoch, "step": self.step, "changes": {k: list(v) for k, v in changes.items()}})
        return history

    def _truncate_metrics(self) -> None:
        path = self.run_dir / METRICS_NAME
        if not path.exists() or not self.dist.is_main:
            return
        rows, unreadable = read_metrics(path)
        if unreadable:
            print(f"pyro-vae: {path}: left out {unreadable} unreadable line(s) (cut short by a crash, or edited)", file=sys.stderr)
        rows = [r for r in rows if int(r["epoch"]) <= self.epoch]
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=METRIC_FIELDS)
        w.writeheader()
        w.writerows(rows)
        write_text_atomically(path, text.getvalue())  # a crash here leaves the old file whole

    def train(
        self,
        resume: bool = False,
        on_epoch_end: Optional[Callable[["Trainer", Dict[str, Any]], None]] = None,
        allow_changes: bool = False,
    ) -> List[Dict[str, Any]]:
        """Train until the config's epochs or sample budget; returns the metric rows of this call.

        :param resume: continue from the run folder's checkpoint. Only the settings in
            ``config.RESUMABLE_SETTINGS`` may differ from the checkpoint's, unless ``allow_changes``
            (then the changes are recorded in run.json under ``resumed_with_changes``).

        :param on_epoch_end: called with the trainer and the epoch's metric row (experiments use it
            to estimate log p(x) at chosen points of training).
        """
        if not resume and self.run_dir.is_dir():
            check_new_run_folder(self.run_dir)  # before the lock file goes into a folder of the user's (again under it)
        # One trainer per run folder: a second one (the same command started twice) is refused
        # rather than interleaving metrics.csv and checkpoints. torchrun's ranks share the folder.
        with exclusive_lock(self.run_dir, "the run folder", wait=False) if self.dist.is_main else contextlib.nullcontext():
            return self._train(resume, on_epoch_end, allow_changes)

    def _train(
        self, resume: bool, on_epoch_end: Optional[Callable[["Trainer", Dict[str, Any]], None]], allow_changes: bool
    ) -> List[Dict[str, Any]]:
        changed = self.prepare_run_dir(resume, allow_changes)
        if changed:
            # the checkpoint takes the new settings at once, so that it and config.yaml agree even if
            # this run stops before its next checkpoint (load_run checks that they do)
            self.save()
        self._saved_epoch = self.epoch
        cfg = self.config.training
        n = self.x_train.shape[0]
        if self.dist.is_main and self.stop_reason() is None:  # only when there is training to do
            warn_if_full_batch(cfg.batch_size, n)
            warn_if_budget_below_one_batch(cfg.sample_budget, cfg.batch_size, n)
        rows = []
        while self.stop_reason() is None:
            rows.append(self._train_epoch(n, cfg))
            for callback in self.callbacks:
                callback.on_epoch_end(self, rows[-1])
            if on_epoch_end is not None:
                on_epoch_end(self, rows[-1])
        if not rows or self._saved_epoch != self.epoch:
            self.save()
        for callback in self.callbacks:
            callback.close()
        return rows

    def _sharded_elbo(self, x: torch.Tensor, batch_size: int) -> Tuple[float, float]:
        """Mean per-datapoint ELBO and its standard error over the points (one draw of z each, so
        the error includes the Monte Carlo noise), each rank scoring a contiguous shard."""
        part = elbo_per_datapoint(self.vae, x[distributed.shard(x.shape[0], self.dist)], batch_size)
        values = distributed.gather_shards(part, x.shape[0], self.dist).double()
        return values.mean().item(), standard_error(values)

    def train_epoch(self) -> Dict[str, Any]:
        """One pass over the training data (or up to the sample budget); returns its metric row.
        ``train`` calls it until ``finished``; benchmarks call it directly."""
        return self._train_epoch(self.x_train.shape[0], self.config.training)

    def _eager_step(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The optimizer steps of one minibatch (one for every objective but MCEM); the last loss."""
        for loss in self.objective.step_losses(self.vae, x, idx, self.x_train.shape[0]):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(self._params, self.dist)
            self.optimizer.step()
        return loss

    def _train_epoch(self, n: int, cfg: TrainingConfig) -> Dict[str, Any]:
        start = time.perf_counter()
        opt, objective = self.optimizer, self.objective
        dynamic = self.config.data.binarize == "dynamic"
        perm = torch.randperm(n, generator=self.shuffle_generator).to(self.device)
        batches = perm.split(cfg.batch_size)  # global minibatches, identical on every rank
        world, rank = self.dist.world_size, self.dist.rank
        budget = cfg.sample_budget
        if cfg.cuda_graphs and self._graphed is None:
            self._graphed = GraphedStep(self._eager_step, binarize_dynamic if dynamic else _unchanged, opt, cfg.batch_size)
        graphed = self._graphed
        running = torch.zeros((), device=self.device)
        epoch_sum = torch.zeros((), device=self.device)
        seen_this_epoch = 0
        bar = tqdm(total=len(batches), desc=f"epoch {self.epoch + 1}", disable=not self.progress, leave=False)
        for i, global_idx in enumerate(batches):
            if world > 1:
                # Trim a short last batch to a multiple of the world size so that every shard has
                # B/W points and the N/(B/W) scaling of each rank stays exact.
                global_idx = global_idx[: global_idx.shape[0] - global_idx.shape[0] % world]
                if global_idx.shape[0] == 0:
                    continue
            idx = global_idx[rank::world]
            x = self.x_train[idx]
            try:
                if graphed is not None:
                    loss = graphed.step(x, idx)
                else:
                    loss = self._eager_step(binarize_dynamic(x) if dynamic else x, idx)
            except (RuntimeError, ValueError) as e:
                # Parameters that diverged between two loss checks surface as errors of whatever
                # meets them first (sampling a mixture's NaN weights, a Cholesky factor, a
                # distribution's argument check): report the divergence, not the symptom.
                if isinstance(e, PyroVAEError) or all(bool(torch.isfinite(p).all()) for p in self._params):
                    raise
                symptom = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]  # Pyro appends its trace's shapes
                self._stop_diverged(f"the parameters became non-finite (epoch {self.epoch + 1}, step {self.step + 1}: {symptom})")
            loss = loss.detach()
            running += loss
            # Each rank's loss estimates the full-data loss; weight it by the global batch's share of
            # the epoch (ranks are averaged at the epoch's end).
            epoch_sum += loss * (global_idx.shape[0] / n)
            self.step += 1
            seen_this_epoch += global_idx.shape[0]
            self.samples_seen += global_idx.shape[0]
            if (i + 1) % cfg.log_every == 0:
                # the one host sync every log_every steps (all ranks agree on a NaN stop)
                value = distributed.all_reduce_mean(running, self.dist).item() / cfg.log_every
                self._check_finite(value, f"epoch {self.epoch + 1}, step {self.step}")
                bar.set_postfix(elbo_per_point=f"{-value / n:.2f}")
                running.zero_()
            bar.update(1)
            if budget is not None and self.samples_seen >= budget:
                break
        bar.close()
        total = distributed.all_reduce_mean(epoch_sum, self.dist).item()
        self._check_finite(total, f"epoch {self.epoch + 1}")
        self.epoch += 1
        train_objective = -total / seen_this_epoch  # the objective's own value per datapoint
        epoch_seconds = time.perf_counter() - start
        self.wall_seconds += epoch_seconds
        test_elbo = test_elbo_stderr = float("nan")
        train_elbo = train_objective if objective.loss_is_elbo and not cfg.eval_train_points else float("nan")
        if self.epoch % cfg.eval_every == 0 or self.stop_reason() is not None:
            test_elbo, test_elbo_stderr = self._sharded_elbo(self.x_test, cfg.eval_batch_size)
            if cfg.eval_train_points:
                train_elbo = self._sharded_elbo(self.x_train_eval, cfg.eval_batch_size)[0]
        lr = opt.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        row = dict(
            epoch=self.epoch,
            step=self.step,
            samples_seen=self.samples_seen,
            train_objective=train_objective,
            train_elbo=train_elbo,
            test_elbo=test_elbo,
            test_elbo_stderr=test_elbo_stderr,
            lr=lr,
            epoch_seconds=round(epoch_seconds, 4),
            wall_seconds=round(self.wall_seconds, 4),
        )
        self._write_metrics(row)
        if self.epoch_lines:
            tqdm.write(f"{describe_epoch(row, objective.name)} ({epoch_seconds:.1f} s)")
        if self.epoch % cfg.checkpoint_every == 0 or self.stop_reason() is not None:
            self.save()
            self._saved_epoch = self.epoch
        return row


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


def describe_epoch(row: Dict[str, Any], objective_name: str) -> str:
    """One line for an epoch's metric row: the objective's own value, then the train and test
    ELBO where they were measured (a NaN in metrics.csv means "not measured this epoch")."""
    parts = []
    if row["train_elbo"] != row["train_objective"]:  # an objective other than the ELBO, or the ELBO re-measured
        parts.append(f"train {objective_name} {row['train_objective']:.3f}")
    if math.isfinite(row["train_elbo"]):
        parts.append(f"train ELBO {row['train_elbo']:.3f}")
    else:
        parts.append("train ELBO not measured (training.eval_train_points: N measures it on N points)")
    if math.isfinite(row["test_elbo"]):
        stderr = row.get("test_elbo_stderr", float("nan"))
        parts.append(f"test ELBO {row['test_elbo']:.3f}" + (f" +- {stderr:.3f}" if math.isfinite(stderr) else ""))
    return f"epoch {row['epoch']}: " + ", ".join(parts) + " nats per datapoint"
