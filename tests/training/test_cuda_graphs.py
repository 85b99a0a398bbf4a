"""Training steps replayed as CUDA graphs (``training.cuda_graphs``): refused with the reason where
a graph cannot replay the step (on every machine), and on a GPU the same training as the eager path."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.data.datasets import Dataset
from pyro_vae.errors import ConfigError
from pyro_vae.training.trainer import Trainer
from tests.conftest import tiny_config

NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")


def _images(n_train: int = 70) -> Dataset:
    """Grey-level 4x4 images (dynamically binarized by the configs below: inside the graph too)."""
    x = torch.rand(n_train + 10, 16, generator=torch.Generator().manual_seed(0))
    return Dataset("images", x[:n_train], x[n_train:], (1, 4, 4))


def _config(objective: str = "trace_meanfield", schedule: str = "none", epochs: int = 4, cuda_graphs: bool = True):
    return tiny_config(device="cuda", data={"name": "synthetic", "binarize": "dynamic"},
                       model={"z_dim": 2, "likelihood": {"name": "bernoulli"}}, objective={"name": objective},
                       optimizer={"name": "adagrad", "lr": 0.05, "schedule": {"name": schedule, "gamma": 0.5}},
                       training={"epochs": epochs, "batch_size": 20, "log_every": 2, "cuda_graphs": cuda_graphs})


@pytest.mark.parametrize("sections,message", [
    ({"device": "cpu"}, r"training.cuda_graphs needs a CUDA device \(the run's is cpu\); set training.cuda_graphs: false\."),
])
def test_a_step_that_cannot_be_replayed_is_refused_in_one_line(tmp_path, sections, message):
    cfg = tiny_config(training={"epochs": 1, "batch_size": 20, "cuda_graphs": True}, optimizer={"name": "adagrad", "lr": 0.01}, **sections)
    with pytest.raises(ConfigError, match=message):
        Trainer(cfg, tmp_path / "run", progress=False)


@pytest.mark.parametrize("objective,optimizer,message", [
    ({"name": "mcem"}, {"name": "adagrad"}, r"objective 'mcem' cannot be replayed as a CUDA graph \(several optimizer steps per "
                                            r"minibatch or per-datapoint state\); set training.cuda_graphs: false\."),
    ({"name": "trace"}, {"name": "adam"}, r"optimizer Adam reads host values in its update .* use adagrad or sgd, or set "
                                          r"training.cuda_graphs: false\."),
])
def test_objectives_and_optimizers_that_a_graph_cannot_replay_are_named(objective, optimizer, message):
    from pyro_vae.config.build import objective_from_config, optimizer_from_config
    from pyro_vae.training.cuda_graphs import check_capturable

    cfg = tiny_config(objective=objective, optimizer=optimizer)
    params = [torch.nn.Parameter(torch.zeros(2))]
    built, _ = optimizer_from_config(cfg.optimizer, params, None)
    with pytest.raises(ConfigError, match=message):
        check_capturable(torch.device("cuda"), objective_from_config(cfg.objective), built, distributed=False)
    with pytest.raises(ConfigError, match="not supported in distributed training"):
        check_capturable(torch.device("cuda"), objective_from_config(tiny_config().objective), built, distributed=True)


def test_every_objective_but_mcem_and_the_papers_optimizers_can_be_replayed():
    from pyro_vae.components.registry import OBJECTIVES
    from pyro_vae.optimizers.inplace import SGD, Adagrad, Adam

    replayable = {name for name in OBJECTIVES.names() if OBJECTIVES.build(name, {}).capturable}
    assert replayable == set(OBJECTIVES.names()) - {"mcem"}
    assert Adagrad.capturable and SGD.capturable and not getattr(Adam, "capturable", False)


@NO_GPU
@pytest.mark.parametrize("objective", ["trace_meanfield", "jit_trace_meanfield", "iwae", "wake_sleep", "rws"])
@pytest.mark.parametrize("schedule", ["none", "exponential"])
def test_replayed_training_is_the_eager_training(tmp_path, objective, schedule):
    """Same seed, same data: the parameters after 4 epochs (3 warm-up steps, a capture, replays, each
    epoch's short last minibatch eager, a new capture whenever the schedule changes the step size)
    agree with eager training to float rounding, and so do the optimizer's step counts."""
    def train(cuda_graphs: bool, run: str) -> Trainer:
        trainer = Trainer(_config(objective, schedule, cuda_graphs=cuda_graphs), tmp_path / run, data=_images(), progress=False)
        trainer.train()
        return trainer

    eager, replayed = train(False, "eager"), train(True, "graphs")
    assert replayed._graphed is not None and replayed._graphed.replays >= 4 * 3 - 3 - 1
    for (name, a), b in zip(eager.vae.named_parameters(), replayed.vae.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    steps = lambda t: [float(s["step"]) for s in t.optimizer.state.values()]  # noqa: E731
    assert steps(replayed) == steps(eager) == [16.0] * len(steps(eager))
    rows_eager, rows_replayed = (t.run_dir / "metrics.csv" for t in (eager, replayed))
    assert rows_eager.read_text().count("\n") == rows_replayed.read_text().count("\n")


@NO_GPU
def test_a_replayed_run_resumes_and_ends_as_the_eager_one(tmp_path):
    """A checkpoint written by replayed training resumes (the graph is captured again on the loaded
    optimizer state) and ends where eager training does."""
    Trainer(_config(epochs=2), tmp_path / "split", data=_images(60), progress=False).train()
    resumed = Trainer(_config(epochs=4), tmp_path / "split", data=_images(60), progress=False)
    resumed.train(resume=True)
    eager = Trainer(_config(epochs=4, cuda_graphs=False), tmp_path / "eager", data=_images(60), progress=False)
    eager.train()
    for (name, a), b in zip(eager.vae.named_parameters(), resumed.vae.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
