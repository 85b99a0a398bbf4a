"""A CPU stand-in for ``torch.cuda.CUDAGraph``, so that what a replayed training step depends on is
tested on machines without a GPU.

A CUDA graph (``torch.cuda`` documentation, *CUDA Graphs*) is the list of kernels that one run of
the step launched, with the memory each read and wrote and the Python numbers baked into their
arguments. Its semantics, which this stand-in reproduces on the CPU's tensors:

* **capture records, it does not compute**: the step's Python runs once, every tensor operation it
  dispatches is recorded (``TorchDispatchMode`` sees them all, Pyro's, autograd's backward and
  TorchScript's included), and the state that existed before the capture (parameters, optimizer
  accumulators, the random generator) is left as it was;
* **host code runs at capture only**: a replay runs the recorded operations on the same tensors
  with the same arguments, in order, and nothing else: no Python branch, no ``param.grad = None``,
  no update of the optimizer's host-side step counters (the ``host_tensors`` of a capture, which
  a CUDA run keeps on the CPU); a host tensor that a recorded operation reads keeps its value at
  capture, as a kernel's scalar argument does;
* **no reading back while capturing**: ``.item()``, ``bool(tensor)``, ``nonzero`` on a recorded
  tensor raise, as CUDA refuses a synchronisation while a stream captures;
* **random draws advance the generator**: each replay draws afresh from torch's generator, as the
  eager step's operations would have.

What it does not reproduce is CUDA's own: streams, the graph's memory pool, kernel selection.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Sequence, Set, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from tests.test_synchronisation import SYNCHRONISING, is_shape_scalar



def _tensors(value: Any) -> List[torch.Tensor]:
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def _written_arguments(func, args: Tuple, kwargs: Dict) -> List[torch.Tensor]:
    """The tensors an operation writes in place (``Tensor(a!)`` in its schema)."""
    written = []
    for i, argument in enumerate(func._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        value = args[i] if i < len(args) else kwargs.get(argument.name)
        written += _tensors(value)
    return written


def _returns_alias(func) -> bool:
    """Whether the operation returns a view of (or the same tensor as) an argument."""
    return any(r.alias_info is not None for r in func._schema.returns)


class _Recorded:
    def __init__(self, func, args: Tuple, kwargs: Dict, outputs: List[torch.Tensor]) -> None:
        self.func, self.args, self.kwargs, self.outputs = func, args, kwargs, outputs

    @torch.no_grad()
    def run(self) -> None:
        result = self.func(*self.args, **self.kwargs)
        for out, new in zip(self.outputs, _tensors(result)):
            out.copy_(new)


class StandInGraph:
    """One captured step: the recorded operations, replayed in order on the same tensors."""

    def __init__(self) -> None:
        self.operations: List[_Recorded] = []

    def replay(self) -> None:
        for operation in self.operations:
            operation.run()


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: StandInGraph, host: Set[int]) -> None:
        super().__init__()
        self.graph, self.host = graph, host
        self.made: Set[int] = set()  # storages allocated during the capture
        self.saved: List[Tuple[torch.Tensor, torch.Tensor]] = []  # (tensor, its value before the capture)
        self.saved_ids: Set[int] = set()

    def _is_host(self, t: torch.Tensor) -> bool:
        return id(t) in self.host or is_shape_scalar(t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _tensors((args, kwargs))
        if inputs and all(self._is_host(t) for t in inputs):
            return func(*args, **kwargs)  # host code: runs at capture, not recorded
        if str(func) in SYNCHRONISING:
            raise RuntimeError(f"operation not permitted when stream is capturing ({func} reads a tensor back)")
        for t in _written_arguments(func, args, kwargs):
            if t.untyped_storage().data_ptr() not in self.made and id(t) not in self.saved_ids:
                self.saved.append((t, t.clone()))  # the capture must leave it as it was
                self.saved_ids.add(id(t))
        result = func(*args, **kwargs)
        outputs = [] if _returns_alias(func) else _tensors(result)
        self.made.update(t.untyped_storage().data_ptr() for t in outputs)
        # a host tensor in a device kernel's arguments is read when the kernel is launched: the
        # graph keeps its value at capture
        baked_args, baked_kwargs = tree_map(self._baked, (args, kwargs))
        self.graph.operations.append(_Recorded(func, baked_args, baked_kwargs, outputs))
        return result

    def _baked(self, value: Any) -> Any:
        return value.clone() if isinstance(value, torch.Tensor) and self._is_host(value) else value

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, before in reversed(self.saved):
            tensor.copy_(before)


class StandInGraphs:
    """The stand-in for :class:`pyro_vae.training.cuda_graphs.CudaGraphs`. The ``host_tensors``
    given to ``capture`` (the optimizer's step counts, which a CUDA run keeps on the CPU) are host
    code's: their operations run at capture and are never replayed."""

    def __init__(self) -> None:
        self.captures = 0

    @contextlib.contextmanager
    def side_stream(self, device: torch.device) -> Iterator[None]:
        yield

    def new_graph(self) -> StandInGraph:
        return StandInGraph()

    @contextlib.contextmanager
    def capture(self, graph: StandInGraph, host_tensors: Sequence[torch.Tensor] = ()) -> Iterator[None]:
        recorder = _Recorder(graph, {id(t) for t in host_tensors})
        rng = torch.get_rng_state()
        try:
            with recorder:
                yield
        finally:
            recorder.restore()
            torch.set_rng_state(rng)
            self.captures += 1
