"""Data-parallel training and sharded evaluation with ``torch.distributed`` (launched by torchrun).

``torchrun --nproc_per_node N -m pyro_vae train CONFIG`` starts N processes; each reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment. Semantics are those of DistributedDataParallel:

* every rank draws the same global permutation of the data each epoch and takes a distinct shard of
  every global minibatch (``batch[rank::world]``), so together the ranks see each point once;
* each rank's loss is scaled by N / (B / W), and gradients are averaged across ranks with one
  all-reduce over a flat buffer: the average of the W shard estimates is exactly the single-process
  estimate on the combined batch, so the ELBO stays unbiased for the full data set;
* only rank 0 writes metrics, plots and checkpoints; RNG states of every rank are checkpointed.

Backends: NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, List

import torch
import torch.distributed as dist

from pyro_vae.errors import ConfigError, TrainingError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a torchrun job (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()


_TORCHRUN_HINT = "torchrun sets RANK, WORLD_SIZE and LOCAL_RANK itself; unset them to run in one process."


def _env_number(name: str, default: str, kind: type, minimum: float, hint: str = _TORCHRUN_HINT) -> float:
    """A number from the environment, or a ConfigError naming the variable (not a ValueError)."""
    text = os.environ.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name}={text!r}: expected a {'whole ' if kind is int else ''}number >= {minimum:g}. {hint}")
    return value


def from_env() -> DistInfo:
    """The process's place in a torchrun job (single process when WORLD_SIZE is unset or 1)."""
    world = int(_env_number("WORLD_SIZE", "1", int, 1))
    if world == 1:
        return SINGLE
    rank, local_rank = int(_env_number("RANK", "0", int, 0)), int(_env_number("LOCAL_RANK", "0", int, 0))
    if rank >= world:
        raise ConfigError(f"RANK={rank} is not below WORLD_SIZE={world}; start the job with torchrun, which sets both.")
    return DistInfo(rank, world, local_rank)


def init(info: DistInfo, device: torch.device, timeout_s: float | None = None) -> None:
    """Join the process group (no-op for a single process or when already joined)."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        # NCCL's object collectives (all_gather_object, used for the checkpoint's RNG states) and
        # its barrier run on the *current* CUDA device: unless each rank makes its own GPU
        # current, every rank would use cuda:0 and NCCL refuses (or hangs on) two ranks per GPU.
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=timeout_s or _env_number(
        "PYRO_VAE_DIST_TIMEOUT", "120", float, 1, "It is the seconds every rank may take to join the job (default 120)."
    ))
    try:
        dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, timeout=timeout)
    except Exception as e:  # a rank that never comes up, a bad address, a port in use
        raise TrainingError(
            f"rank {info.rank} of {info.world_size} could not join the {backend} process group within {timeout}: {e}. "
            "Check that every rank started (torchrun's log), that MASTER_ADDR/MASTER_PORT are reachable, "
            "and raise PYRO_VAE_DIST_TIMEOUT for slow starts."
        ) from e


def check_batch(info: DistInfo, batch_size: int) -> int:
    """The per-rank batch size; the world size must divide the global batch size."""
    if batch_size % info.world_size:
        raise ConfigError(
            f"training.batch_size {batch_size} is not divisible by the world size {info.world_size}; "
            f"use a batch size that is a multiple of {info.world_size} (the global batch is split evenly across ranks)."
        )
    return batch_size // info.world_size


def average_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Average .grad across ranks with one all-reduce (missing grads count as zero)."""
    if not info.enabled:
        return
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of ``value`` over the ranks (``value`` itself in a single process)."""
    if not info.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / info.world_size


def check_shardable(n: int, info: DistInfo) -> None:
    """Raise a ConfigError unless ``n`` points give every rank at least one (an estimator cannot
    score an empty shard)."""
    if n < info.world_size:
        raise ConfigError(
            f"{n} point(s) cannot be shared by {info.world_size} processes (each scores at least one); "
            f"evaluate at least {info.world_size} points (--n) or start fewer processes."
        )


def shard(n: int, info: DistInfo) -> slice:
    """Contiguous shard of ``range(n)`` for evaluation (sizes differ by at most one)."""
    base, extra = divmod(n, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return slice(start, start + base + (1 if info.rank < extra else 0))


def gather_shards(values: torch.Tensor, n: int, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's contiguous shard of per-datapoint values, in datapoint order."""
    if not info.enabled:
        return values
    sizes = [shard(n, DistInfo(r, info.world_size)).stop - shard(n, DistInfo(r, info.world_size)).start for r in range(info.world_size)]
    padded = torch.zeros(max(sizes), dtype=values.dtype, device=values.device)
    padded[: values.shape[0]] = values
    out: List[torch.Tensor] = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(out, padded)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


def gather_objects(obj: Any, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait until every rank is here."""
    if info.enabled:
        dist.barrier()


# How long a rank lets gloo's worker threads finish with the last collectives before tearing down.
_GLOO_SETTLE_SECONDS = 0.2


def shutdown(info: DistInfo) -> None:
    """Leave the process group cleanly: every rank reaches the barrier before any tears down its
    connections (tearing down while a peer still talks to the store aborted a rank in our tests).

    Then, with gloo, a pause before ``destroy_process_group``: a worker thread of gloo frees a
    finished collective (and the tensors Python made for it, such as ``all_gather_object``'s)
    after waking its caller, and freeing those needs the GIL, while ``destroy_process_group``
    holds the GIL and joins that thread. Without the pause about one 2-rank job in ten hung there
    on torch 2.4 (pytorch/pytorch#75097 reports the hang)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        if dist.get_backend() == "gloo":
            time.sleep(_GLOO_SETTLE_SECONDS)  # the GIL is released: the worker threads finish
        dist.destroy_process_group()
