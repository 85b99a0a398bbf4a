"""The CPU stand-in for CUDA graphs behaves as a CUDA graph does where a training step depends on
it (what graph_stand_in.py's docstring lists), so that the replayed-training tests on CPU mean
what they would on a GPU."""

from __future__ import annotations

import pytest
import torch

from tests.training.graph_stand_in import StandInGraphs


def _sgd_step(w: torch.Tensor, x: torch.Tensor, lr: float) -> torch.Tensor:
    """loss = sum((x w)^2) with a dropout-like random mask; w -= lr * grad; returns the loss."""
    w.grad = None
    mask = torch.rand_like(x).lt_(0.5)
    loss = ((x * mask) @ w).pow(2).sum()
    loss.backward()
    with torch.no_grad():
        w.add_(w.grad, alpha=-lr)
    return loss.detach()


def test_capture_records_without_computing_and_replays_compute_like_the_eager_step():
    graphs = StandInGraphs()
    w, x = torch.ones(3, 1, requires_grad=True), torch.full((4, 3), 0.5)
    w_eager = w.detach().clone().requires_grad_()
    graph = graphs.new_graph()
    eager_rng = torch.get_rng_state()
    with graphs.capture(graph):
        loss = _sgd_step(w, x, 0.01)
    # the captured update did not happen, nor its draws: the replays draw what the eager steps do
    assert torch.equal(w, torch.ones(3, 1)) and torch.equal(torch.get_rng_state(), eager_rng)
    for step in range(3):
        x.copy_(torch.full((4, 3), 0.1 * (step + 1)))  # new input in the static buffer
        graph.replay()
        after = torch.get_rng_state()
        torch.set_rng_state(eager_rng)
        expected = _sgd_step(w_eager, x.clone(), 0.01)
        eager_rng = torch.get_rng_state()
        torch.set_rng_state(after)
        assert torch.equal(loss, expected) and torch.equal(w, w_eager.detach())
    assert not torch.equal(w, torch.ones(3, 1))


def test_a_python_number_is_baked_in_and_host_code_runs_at_capture_only():
    counter = torch.tensor(0.0)
    graphs = StandInGraphs()
    w, x = torch.ones(3, 1, requires_grad=True), torch.ones(4, 3)
    state = {"lr": 0.01}
    graph = graphs.new_graph()

    def step():
        counter.add_(1.0)  # host code (the optimizer's step count)
        _sgd_step(w, x, state["lr"])

    with graphs.capture(graph, [counter]):
        step()
        scaled = x * counter  # a host tensor read by a device operation
    assert float(counter) == 1.0
    state["lr"] = 0.0  # a replay does not read it again: the graph keeps 0.01
    counter.fill_(5.0)  # nor the host tensor: the graph keeps 1.0
    before = w.detach().clone()
    graph.replay()
    assert float(counter) == 5.0 and not torch.equal(w, before) and torch.equal(scaled, x)


@pytest.mark.parametrize("read_back", [lambda t: t.item(), lambda t: bool(t > 0), lambda t: t.nonzero()])
def test_reading_a_tensor_back_while_capturing_fails_as_on_cuda(read_back):
    graphs = StandInGraphs()
    x = torch.ones(3)
    with pytest.raises(RuntimeError, match="operation not permitted when stream is capturing"):
        with graphs.capture(graphs.new_graph()):
            read_back(x.sum())
