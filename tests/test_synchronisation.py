"""No host synchronisation inside a training step, an IWAE chunk or an HMC transition.

On a GPU, reading a value back (``.item()``, ``bool(tensor)``, ``float(tensor)``, ``nonzero``,
``torch.equal``) waits for every queued kernel, and a step then runs at the host's pace. These
tests count the operations that would synchronise, on CPU, with a dispatch mode that sees every
tensor operation (Pyro's and torch's included), and the tensors made from Python data inside
them (on a GPU a copy from host memory). Integer scalars of no dimension are left out: they
are shape arithmetic in traced graphs (``NumToTensor`` of a size), which stays on the host on a GPU
too. On CUDA the same steps run under ``torch.cuda.set_sync_debug_mode("error")``.
"""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_vae.components.registry import OBJECTIVES
from pyro_vae.estimators.iwae import log_weight_stats
from pyro_vae.mcmc.hmc import BatchedHMC
from pyro_vae.mcmc.potentials import model_log_densities
from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config

SYNCHRONISING = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.is_nonzero.default", "aten.equal.default"}
# A tensor made from Python data (``torch.tensor(...)``): on a GPU, one on the device is a copy from
# pageable host memory, which waits for the stream and cannot be captured in a CUDA graph.
FROM_HOST_DATA = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default"}


def is_shape_scalar(t: torch.Tensor) -> bool:
    """An integer scalar of no dimension: shape arithmetic, which stays on the host on a GPU too."""
    return t.dim() == 0 and not t.is_floating_point() and t.dtype != torch.bool


class CountSynchronisations(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = args[0] if args and torch.is_tensor(args[0]) else None
        shape_scalar = first is not None and is_shape_scalar(first)
        if (str(func) in SYNCHRONISING and not shape_scalar) or str(func) in FROM_HOST_DATA:
            self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _trainer(tmp_path, objective: str) -> Trainer:
    options = {"m_steps": 1} if objective == "mcem" else {}
    trainer = Trainer(tiny_config(objective={"name": objective, **options}, training={"epochs": 1, "batch_size": 20}),
                      tmp_path / objective, progress=False)
    trainer.run_dir.mkdir()
    trainer.train_epoch()  # compiles the JIT objectives, starts MCEM's chains
    return trainer


def _step(trainer: Trainer) -> None:
    x, idx = trainer.x_train[:20], torch.arange(20, device=trainer.device)
    for loss in trainer.objective.step_losses(trainer.vae, x, idx, trainer.x_train.shape[0]):
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()


@pytest.mark.parametrize("objective", OBJECTIVES.names())
def test_a_training_step_reads_nothing_back(tmp_path, objective):
    trainer = _trainer(tmp_path, objective)
    with CountSynchronisations() as counter:
        _step(trainer)
    assert not counter.calls, counter.calls


def test_an_iwae_chunk_and_an_hmc_transition_read_nothing_back(tmp_path):
    vae, x = _trainer(tmp_path, "trace").vae, torch.randn(10, 6)
    densities = model_log_densities(vae, x)
    kernel = BatchedHMC(lambda z: -sum(densities(z)), step_size=0.1, num_leapfrog=3)
    z = torch.zeros(4, 10, 2)
    kernel.step(z, adapt=True)
    with CountSynchronisations() as counter, torch.no_grad():
        log_weight_stats(vae.model, vae.guide, x, 50, 25)
    with CountSynchronisations() as hmc_counter:
        kernel.step(z, adapt=True)
        kernel.step(z)
    assert not counter.calls and not hmc_counter.calls, (counter.calls, hmc_counter.calls)


def test_the_counter_sees_a_read_back_and_a_tensor_from_host_data():
    with CountSynchronisations() as counter:
        float(torch.ones(3).sum())
        bool(torch.ones(1) > 0)
        torch.tensor([0.5])
    assert counter.calls["aten._local_scalar_dense.default"] == 2 and counter.calls["aten.lift_fresh.default"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("objective", ["trace_meanfield", "jit_trace_meanfield", "iwae", "wake_sleep"])
def test_on_cuda_a_training_step_never_synchronises(tmp_path, objective):
    options = {"m_steps": 1} if objective == "mcem" else {}
    trainer = Trainer(tiny_config(objective={"name": objective, **options}, device="cuda", training={"epochs": 1, "batch_size": 20}),
                      tmp_path / objective, progress=False)
    trainer.run_dir.mkdir()
    trainer.train_epoch()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _step(trainer)
    finally:
        torch.cuda.set_sync_debug_mode("default")
