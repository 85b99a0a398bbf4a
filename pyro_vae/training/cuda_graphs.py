"""Training steps replayed as CUDA graphs (``training.cuda_graphs: true``).

A step of a fixed-structure objective launches the same kernels on tensors of the same shapes at
every minibatch. On a GPU the paper's model is a few microseconds of arithmetic per step, and the
Python that launches it (Pyro's effect handlers, the autograd engine, the optimizer's loops) costs
milliseconds. ``torch.cuda.CUDAGraph`` records the kernels of one step once and replays them with
one launch: the step's Python runs only when it is captured.

The recipe is PyTorch's whole-network capture (``torch.cuda`` documentation, *CUDA Graphs*):

1. warm-up: the first ``WARMUP_STEPS`` minibatches train eagerly on a side stream, so that state
   created on first use (the optimizer's accumulators, cuBLAS workspaces, Pyro's JIT graphs) exists
   before capture;
2. capture: dynamic binarization, loss, backward and optimizer step of one minibatch read from a
   static input buffer, with every gradient left unset before (so that backward writes it afresh);
3. each later minibatch of that size: copied into the buffer, the graph replayed, its static loss
   read (no host synchronisation: the trainer reads losses every ``log_every`` steps).

Random draws inside the graph (``z ~ q(z|x)``, the binarization) use torch's CUDA generator, whose
Philox offset each replay advances by what the captured kernels consume, as the eager step would;
the replayed and the eager training agree to float rounding (tested on CUDA, and bit for bit on
the CPU through a stand-in for the graph that records and replays the step's tensor operations).

A graph holds the values it was captured with, so what would change them is handled here:

* the learning rate (a Python number in the optimizer's kernels): captured again when a schedule
  changes it;
* a minibatch of another size (the last, short one of an epoch): trained eagerly;
* the CPU step counters of the optimizer's state (updated by host code the graph does not run):
  advanced by one after each replay, so checkpoints count steps as the eager path does.

What cannot be replayed is refused at the start, with the reason (:func:`check_capturable`):
objectives with several optimizer steps per minibatch or per-datapoint state (MCEM), optimizers
whose update reads a host value (Adam's bias correction), distributed training, non-CUDA devices.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, List, Optional, Sequence

import torch

from pyro_vae.errors import ConfigError
from pyro_vae.objectives.base import Objective

WARMUP_STEPS = 3  # eager steps on a side stream before capture (PyTorch's documentation uses 3)

# (minibatch, its indices in the data set) -> the step's loss, after its optimizer step
StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_capturable(device: torch.device, objective: Objective, optimizer: torch.optim.Optimizer, distributed: bool) -> None:
    """Raise a ConfigError naming why a training step of this setup cannot be a CUDA graph."""
    fix = "set training.cuda_graphs: false"
    if device.type != "cuda":
        raise ConfigError(f"training.cuda_graphs needs a CUDA device (the run's is {device}); {fix}.")
    if distributed:
        raise ConfigError(f"training.cuda_graphs is not supported in distributed training yet; {fix}, or train in one process.")
    if not getattr(objective, "capturable", False):
        raise ConfigError(f"objective {objective.name!r} cannot be replayed as a CUDA graph (several optimizer steps per "
                          f"minibatch or per-datapoint state); {fix}.")
    if not getattr(optimizer, "capturable", False):
        raise ConfigError(f"optimizer {type(optimizer).__name__} reads host values in its update (a step count for bias "
                          f"correction) and cannot be replayed as a CUDA graph; use adagrad or sgd, or {fix}.")


class CudaGraphs:
    """What :class:`GraphedStep` needs of ``torch.cuda``: warm-up on a side stream, a new graph,
    capture into it (the graph's ``replay()`` runs it). Tests of the step's bookkeeping pass a
    stand-in with the same methods that records and replays on the CPU."""

    @contextlib.contextmanager
    def side_stream(self, device: torch.device) -> Iterator[None]:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(device).wait_stream(side)

    def new_graph(self) -> Any:
        return torch.cuda.CUDAGraph()

    def capture(self, graph: Any, host_tensors: Sequence[torch.Tensor] = ()) -> ContextManager:
        """Record the kernels launched inside the block into ``graph``. ``host_tensors``: what the
        step updates on the host (the optimizer's CPU step counts); a CUDA graph records device work
        only, so they need nothing here (a stand-in that runs on the CPU tells them apart by it)."""
        return torch.cuda.graph(graph)


class GraphedStep:
    """``step(x, idx)``: one training step on minibatch ``x`` (rows ``idx`` of the data set), eager
    during warm-up and for minibatches of another size than the captured one, a replayed CUDA graph
    otherwise. Returns the loss tensor (for replays the graph's static output: read it before the
    next step)."""

    def __init__(self, eager_step: StepFn, prepare: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                 batch_size: int, warmup_steps: int = WARMUP_STEPS, graphs: Optional[CudaGraphs] = None) -> None:
        """
        :param eager_step: one step as the trainer takes it eagerly (zero grads, loss, backward, optimizer
            step) on a prepared minibatch and its indices; returns the loss.
        :param prepare: what is done to a minibatch before the step (dynamic binarization); inside the graph.
        :param batch_size: the minibatch size that is captured; minibatches of other sizes run eagerly.
        :param graphs: how graphs are made, captured and warmed up for (default: ``torch.cuda``'s).
        """
        self.graphs = graphs if graphs is not None else CudaGraphs()
        self.batch_size = batch_size
        self.eager_step = eager_step
        self.prepare = prepare
        self.optimizer = optimizer
        self.warmup_left = warmup_steps
        self.graph: Any = None
        self.static_x: Optional[torch.Tensor] = None
        self.static_idx: Optional[torch.Tensor] = None
        self.static_loss: Optional[torch.Tensor] = None
        self.captured_lrs: List[float] = []
        self.counters: List[torch.Tensor] = []  # the optimizer's CPU step counts, advanced after each replay
        self.replays = 0

    def _lrs(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _step_counters(self) -> List[torch.Tensor]:
        return [s["step"] for s in self.optimizer.state.values() if torch.is_tensor(s.get("step")) and s["step"].device.type == "cpu"]

    def step(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.warmup_left > 0:
            self.warmup_left -= 1
            with self.graphs.side_stream(x.device):
                return self.eager_step(self.prepare(x), idx)
        if x.shape[0] != self.batch_size:
            return self.eager_step(self.prepare(x), idx)
        if self.graph is None or self._lrs() != self.captured_lrs:
            self._capture(x, idx)
        self.static_x.copy_(x)
        self.static_idx.copy_(idx)
        self.graph.replay()
        if self.counters:
            torch._foreach_add_(self.counters, 1.0)
        self.replays += 1
        return self.static_loss

    def _capture(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        self.static_x, self.static_idx = x.detach().clone(), idx.clone()
        self.optimizer.zero_grad(set_to_none=True)  # backward inside the graph allocates the gradients it writes
        graph = self.graphs.new_graph()
        self.counters = self._step_counters()
        saved = [c.clone() for c in self.counters]
        try:
            with self.graphs.capture(graph, self.counters):
                self.static_loss = self.eager_step(self.prepare(self.static_x), self.static_idx).detach()
        except RuntimeError as e:
            message = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ConfigError(f"training.cuda_graphs: the training step could not be captured ({message}); "
                              "set training.cuda_graphs: false.") from e
        # the host code of the optimizer ran once at capture: its step counters are put back, and
        # each replay advances them
        for counter, before in zip(self.counters, saved):
            counter.copy_(before)
        self.graph = graph
        self.captured_lrs = self._lrs()
