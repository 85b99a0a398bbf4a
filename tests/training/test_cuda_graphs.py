"""Training steps replayed as CUDA graphs (``training.cuda_graphs``): refused with the reason where
a graph cannot replay the step, and the same training as the eager path, on a GPU and on the CPU
through a stand-in that records and replays the step as a CUDA graph does."""

from __future__ import annotations

from typing import Optional

import pytest
import torch

from pyro_vae.components.registry import OPTIMIZERS
from pyro_vae.data.datasets import Dataset
from pyro_vae.errors import ConfigError
from pyro_vae.runs.records import read_metrics
from pyro_vae.training.cuda_graphs import check_capturable
from pyro_vae.training.trainer import Trainer
from tests.components.test_registry import GUIDE_CASES, LIKELIHOOD_CASES, PRIOR_CASES
from tests.conftest import tiny_config
from tests.training.graph_stand_in import StandInGraphs

NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")


def _images(n_train: int = 70, side: int = 4, binary_test: bool = True) -> Dataset:
    """Grey-level training images in (0, 1) (dynamically binarized by most configs below: inside the
    graph too) and binary or grey test images."""
    x = torch.rand(n_train + 10, side * side, generator=torch.Generator().manual_seed(0)).clamp(0.01, 0.99)
    test = (x[n_train:] > 0.5).float() if binary_test else x[n_train:]
    return Dataset("images", x[:n_train], test, (1, side, side))


def _config(objective: str = "trace_meanfield", schedule: str = "none", epochs: int = 4, cuda_graphs: bool = True,
            device: str = "cuda", model: Optional[dict] = None, binarize: str = "dynamic", optimizer: str = "adagrad",
            lr: float = 0.05):
    return tiny_config(device=device, data={"name": "synthetic", "binarize": binarize},
                       model={"z_dim": 2, "likelihood": {"name": "bernoulli"}, **(model or {})}, objective={"name": objective},
                       optimizer={"name": optimizer, "lr": lr, "schedule": {"name": schedule, "gamma": 0.5}},
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


# Where the training is replayed: on a GPU, CUDA graphs; everywhere, the CPU stand-in (which
# records and replays the step's operations as a CUDA graph does, see graph_stand_in.py).
DEVICES = [pytest.param("cpu", id="cpu-stand-in"), pytest.param("cuda", id="cuda", marks=NO_GPU)]


@pytest.fixture
def replay_on(monkeypatch):
    """``replay_on(device)``: prepares training with ``cuda_graphs: true`` on ``device``. On the CPU,
    graphs are the stand-in's, and the optimizer runs the foreach update that CUDA runs (not the
    fused CPU kernel); returns the stand-in (None on CUDA)."""
    def prepare(device: str):
        if device == "cuda":
            return None
        from pyro_vae.optimizers import inplace
        from pyro_vae.training import cuda_graphs, trainer

        graphs = StandInGraphs()
        monkeypatch.setattr(inplace, "_fused_cpu_kernel_applies", lambda params, steps: False)
        monkeypatch.setattr(cuda_graphs, "CudaGraphs", lambda: graphs)
        monkeypatch.setattr(trainer, "check_capturable", lambda device, *rest: check_capturable(torch.device("cuda"), *rest))
        return graphs
    return prepare


def _same(a: torch.Tensor, b: torch.Tensor, device: str) -> bool:
    """Bitwise on the CPU stand-in (the same operations replayed); to float rounding on CUDA."""
    return torch.equal(a, b) if device == "cpu" else torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _trainer(cfg, run_dir, data) -> Trainer:
    return Trainer(cfg, run_dir, data=data, progress=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("objective", ["trace_meanfield", "jit_trace_meanfield", "iwae", "wake_sleep", "rws"])
@pytest.mark.parametrize("schedule", ["none", "exponential"])
def test_replayed_training_is_the_eager_training(tmp_path, replay_on, device, objective, schedule):
    """Same seed, same data: the parameters after 4 epochs (3 warm-up steps, a capture, replays, each
    epoch's short last minibatch eager, a new capture whenever the schedule changes the step size)
    are those of eager training, and so are the optimizer's step counts and the logged rows."""
    graphs = replay_on(device)
    eager = _trainer(_config(objective, schedule, cuda_graphs=False, device=device), tmp_path / "eager", _images())
    eager.train()
    replayed = _trainer(_config(objective, schedule, device=device), tmp_path / "graphs", _images())
    replayed.train()
    assert replayed._graphed is not None and replayed._graphed.replays >= 4 * 3 - 3 - 1
    if graphs is not None:
        assert graphs.captures == (3 if schedule == "exponential" else 1)  # epoch 1 is warm-up and a short batch
    for (name, a), b in zip(eager.vae.named_parameters(), replayed.vae.parameters()):
        assert _same(a, b, device), name
    steps = lambda t: [float(s["step"]) for s in t.optimizer.state.values()]  # noqa: E731
    assert steps(replayed) == steps(eager) == [16.0] * len(steps(eager))
    logged = [[float(r[key]) for r in read_metrics(t.run_dir / "metrics.csv")[0] for key in ("train_objective", "test_elbo")]
              for t in (eager, replayed)]
    assert len(logged[0]) == 2 * 4 and _same(torch.tensor(logged[0]), torch.tensor(logged[1]), device)


@pytest.mark.parametrize("device", DEVICES)
def test_every_prior_likelihood_guide_and_network_can_be_replayed(tmp_path, replay_on, device):
    """Each component of the registry, in the paper's objective: captured (no read-back, no host
    branch on a value) and replayed to the parameters of eager training."""
    cases = [{"prior": c, "likelihood": {"name": "continuous_bernoulli"}} for c in PRIOR_CASES]
    cases += [{"likelihood": c} for c in LIKELIHOOD_CASES]
    cases += [{"guide": c, "likelihood": {"name": "continuous_bernoulli"}} for c in GUIDE_CASES]
    cases += [{"encoder": {"name": "conv", "channels": 4, "hidden": 16}, "decoder": {"name": "conv", "channels": 4, "hidden": 16},
               "likelihood": {"name": "bernoulli"}}]
    replay_on(device)
    for i, model in enumerate(cases):
        binary = model["likelihood"]["name"] == "bernoulli"
        data = _images(side=8 if "encoder" in model else 4, binary_test=binary)
        trained = []
        for cuda_graphs in (False, True):
            cfg = _config(epochs=2, cuda_graphs=cuda_graphs, device=device, model=model, binarize="dynamic" if binary else "none")
            trainer = _trainer(cfg, tmp_path / f"{i}-{cuda_graphs}", data)
            trainer.train()
            trained.append(trainer)
        assert trained[1]._graphed.replays == 3, model
        for (name, a), b in zip(trained[0].vae.named_parameters(), trained[1].vae.parameters()):
            assert _same(a, b, device), (model, name)


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_an_optimizer_says_it_is_capturable_exactly_when_a_replay_trains_as_eager(tmp_path, replay_on, monkeypatch, optimizer):
    """Through the CPU stand-in, with the refusal switched off: Adagrad and SGD replay to the eager
    parameters; Adam's bias correction, computed on the host from the step count at capture, stays
    frozen in the graph, so its replays drift (which is why it is refused)."""
    from pyro_vae.training import trainer as trainer_module

    replay_on("cpu")
    monkeypatch.setattr(trainer_module, "check_capturable", lambda *args: None)
    trained = []
    for cuda_graphs in (False, True):
        trainer = _trainer(_config(device="cpu", cuda_graphs=cuda_graphs, optimizer=optimizer, lr=0.01), tmp_path / str(cuda_graphs), _images())
        trainer.train()
        trained.append(trainer)
    assert trained[1]._graphed.replays == 9
    same = all(torch.equal(a, b) for a, b in zip(trained[0].vae.parameters(), trained[1].vae.parameters()))
    assert same == getattr(trained[1].optimizer, "capturable", False)


@pytest.mark.parametrize("device", DEVICES)
def test_a_replayed_run_resumes_and_ends_as_the_eager_one(tmp_path, replay_on, device):
    """A checkpoint written by replayed training resumes (the graph is captured again on the loaded
    optimizer state) and ends where eager training does."""
    replay_on(device)
    _trainer(_config(epochs=2, device=device), tmp_path / "split", _images(60)).train()
    resumed = _trainer(_config(epochs=4, device=device), tmp_path / "split", _images(60))
    resumed.train(resume=True)
    eager = _trainer(_config(epochs=4, cuda_graphs=False, device=device), tmp_path / "eager", _images(60))
    eager.train()
    for (name, a), b in zip(eager.vae.named_parameters(), resumed.vae.parameters()):
        assert _same(a, b, device), name
