"""Training speed: pyro-vae's SVI step against a plain PyTorch VAE of the same math, same run.

All sides train the paper's MLP (784-H-Nz, tanh; or ReLU) with a Bernoulli decoder and the ELBO
(``--objective``: analytic KL with ``trace_meanfield``, Monte Carlo KL with ``trace``), Adagrad,
on the same binarized data, one epoch at a time, interleaved (A B C A B C ...):

* pyro-vae: the ``Trainer`` (Pyro model and guide, the objective's ELBO, pyro-vae's optimizer);
* plain torch: a hand-written VAE with ``torch.optim.Adagrad`` (what a PyTorch user would write);
* plain torch + pyro-vae's Adagrad: the same, with our optimizer, which isolates what Pyro's
  traces cost from what the optimizer saves.

With ``--cuda-graphs`` (CUDA only) pyro-vae trains with ``training.cuda_graphs: true`` and a fourth
side, the plain twin with our Adagrad captured as a PyTorch user would capture it (the ``torch.cuda``
documentation's whole-network recipe), gives the ratio of replayed steps against replayed steps.

Prints median seconds per epoch, steps/s, the ratios (with the quartiles of the epochs' paired
ratios: the run's own noise, ``paired.py``), the time of the first step and the training ELBO curve
of each: all sides start from the same weights and see the same minibatches, and
pyro-vae and plain torch also draw the same z (two copies of one random stream), so their curves
may differ only by float rounding; the twin draws its own z, which shows the Monte Carlo noise.

    python benchmarks/bench_train.py --epochs 3 --n 10000 --batch 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae.cli import positive_int
from pyro_vae.speed import allocator
from pyro_vae import config as C
from pyro_vae.data.datasets import Dataset
from pyro_vae.optimizers.inplace import Adagrad
from pyro_vae.hardware import describe_device, resolve_device, synchronize
from pyro_vae.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helper, also when loaded by path
from paired import paired_ratios_line  # noqa: E402


class PlainVAE(nn.Module):
    def __init__(self, x_dim: int, hidden: int, z_dim: int, act: type) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(x_dim, hidden), act(), nn.Linear(hidden, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), act(), nn.Linear(hidden, x_dim))
        self.z_dim = z_dim

    def loss(self, x: torch.Tensor, num_data: int, analytic_kl: bool = True) -> torch.Tensor:
        h = self.enc(x)
        mu, log_var = h[:, : self.z_dim], h[:, self.z_dim :]
        eps = torch.randn_like(mu)
        z = mu + eps * (0.5 * log_var).exp()
        rec = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        if analytic_kl:
            kl = -0.5 * (1 + log_var - mu**2 - log_var.exp()).sum(-1)
        else:  # log q(z|x) - log p(z) at the sample (the 2 pi terms cancel)
            kl = 0.5 * (z**2 - eps**2 - log_var).sum(-1)
        return -(rec - kl).sum() * (num_data / x.shape[0])


def plain_step(vae: PlainVAE, opt, x: torch.Tensor, num_data: int, analytic_kl: bool = True) -> torch.Tensor:
    loss = vae.loss(x, num_data, analytic_kl)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


class PlainGraphedStep:
    """The plain step as a CUDA graph, as the ``torch.cuda`` documentation captures a whole network:
    three eager steps on a side stream, one capture reading a static input, then replays; a
    minibatch of another size (an epoch's last) runs eagerly."""

    def __init__(self, step, warmup: int = 3) -> None:
        self.step, self.warmup = step, warmup
        self.graph = self.static_x = self.static_loss = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.warmup > 0:
            self.warmup -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.step(x)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            self.static_x, self.graph = x.clone(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_loss = self.step(self.static_x)
        if x.shape != self.static_x.shape:
            return self.step(x)
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_loss


def plain_epoch(step, x: torch.Tensor, batch: int, gen: torch.Generator) -> float:
    """One epoch of ``step(minibatch) -> loss`` in the order ``gen`` shuffles; the mean loss per point."""
    n = x.shape[0]
    total = torch.zeros((), device=x.device)
    for idx in torch.randperm(n, generator=gen).to(x.device).split(batch):
        total += step(x[idx]) * (idx.shape[0] / n)
    return -total.item() / n


class RandomStream:
    """A random stream of its own for one side of the benchmark: torch's global generator (and the
    device's) is switched to this stream's state inside ``active()`` and back afterwards."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.device = device
        saved = self._get()
        torch.manual_seed(seed)
        self.state = self._get()
        self._set(saved)

    def _get(self):
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _set(self, state) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    @contextmanager
    def active(self) -> Iterator[None]:
        saved = self._get()
        self._set(self.state)
        try:
            yield
        finally:
            self.state = self._get()
            self._set(saved)


FIRST_STEP = {
    "plain torch": """
import time, torch
t = time.perf_counter()
import torch.nn.functional as F
from torch import nn
enc = nn.Sequential(nn.Linear(784, {h}), nn.Tanh(), nn.Linear({h}, {z2})).to("{dev}")
dec = nn.Sequential(nn.Linear({z}, {h}), nn.Tanh(), nn.Linear({h}, 784)).to("{dev}")
opt = torch.optim.Adagrad(list(enc.parameters()) + list(dec.parameters()), lr=0.02, foreach=True)
x = torch.bernoulli(torch.full(({b}, 784), 0.3, device="{dev}"))
h = enc(x); mu, lv = h[:, :{z}], h[:, {z}:]
zz = mu + torch.randn_like(mu) * (0.5 * lv).exp()
loss = F.binary_cross_entropy_with_logits(dec(zz), x, reduction="sum") - 0.5 * (1 + lv - mu**2 - lv.exp()).sum()
loss.backward(); opt.step()
if x.is_cuda: torch.cuda.synchronize()
print(time.perf_counter() - t)
""",
    "pyro-vae": """
import time, torch
t = time.perf_counter()
from pyro_vae import config as C
from pyro_vae.data.datasets import Dataset
from pyro_vae.optimizers.inplace import Adagrad
from pyro_vae.training.trainer import Trainer
x = torch.bernoulli(torch.full(({b}, 784), 0.3))
cfg = C.load("aevb_mnist", ["device={dev}", "model.z_dim={z}", "model.encoder.hidden=[{h}]", "model.decoder.hidden=[{h}]"])
tr = Trainer(cfg, "{tmp}", data=Dataset("b", x, x, (1, 28, 28)), progress=False)
idx = torch.arange({b}, device=tr.device)
loss = tr.objective.loss(tr.vae, x.to(tr.device), idx, {b})
loss.backward(); tr.optimizer.step()
if x.is_cuda or tr.device.type == "cuda": torch.cuda.synchronize()
print(time.perf_counter() - t)
""",
}


FIRST_STEP_PROCESSES = 3  # timed fresh processes a side, after one that warms the bytecode cache


def first_step_seconds(which: str, args: argparse.Namespace, bytecode_dir: str) -> float:
    """Median time from after ``import torch`` to the end of the first optimizer step, each in a
    fresh process (so that one-time imports, such as torch._dynamo on the first optimizer, count
    for both sides).

    Python caches compiled modules (``.pyc``), as pip writes them for an installed package; an
    environment with ``PYTHONDONTWRITEBYTECODE`` (or an editable install it applies to) would make
    pyro-vae's side compile its 37 modules from source in every process, about 70 ms that no
    installed copy pays. The processes therefore share a bytecode cache in ``bytecode_dir``
    (``PYTHONPYCACHEPREFIX``: the source tree is left alone), filled by one untimed process a side."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = bytecode_dir
    seconds = []
    for _ in range(1 + FIRST_STEP_PROCESSES):
        code = FIRST_STEP[which].format(h=args.hidden, z=args.z, z2=2 * args.z, b=args.batch, tmp=tempfile.mkdtemp(), dev=args.device)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        seconds.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(seconds[1:])


def main(args: argparse.Namespace) -> None:
    allocator.keep_freed_memory()  # as the pyro-vae command does: no allocator-dependent modes
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(args.n, 784, generator=g) * 0.3, generator=g)
    data = Dataset("bench", x, x[:1000], (1, 28, 28))
    act_name = args.activation
    cfg = C.from_dict({
        "name": "bench", "device": args.device, "data": {"name": "synthetic"},
        "model": {"z_dim": args.z, "likelihood": {"name": "bernoulli"},
                  "encoder": {"name": "mlp", "hidden": [args.hidden], "activation": act_name},
                  "decoder": {"name": "mlp", "hidden": [args.hidden], "activation": act_name}},
        "objective": {"name": args.objective}, "optimizer": {"name": "adagrad", "lr": 0.02},
        "training": {"epochs": 10**6, "batch_size": args.batch, "eval_every": 10**6, "log_every": 10**6, "checkpoint_every": 10**6,
                     "cuda_graphs": args.cuda_graphs},
    })
    analytic = "meanfield" in args.objective
    # pyro-vae and plain torch draw their z from two copies of one random stream: both draw one
    # (batch, Nz) normal per step, so they see the same draws, and their curves may differ only by
    # float rounding (amplified over the steps). The twin draws from a stream of its own: the gap
    # between the two plain runs is the Monte Carlo noise.
    draws = {"ours": RandomStream(device, seed=0), "plain": RandomStream(device, seed=0), "twin": RandomStream(device, seed=1),
             "graphed": RandomStream(device, seed=2)}
    t0 = time.perf_counter()
    ours = Trainer(cfg, tempfile.mkdtemp(prefix="pyro_vae_bench_"), data=data, progress=False)
    # every side starts from pyro-vae's initial weights (the MLPs' state_dict keys match nn.Sequential's)
    start = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in (("enc", ours.vae.encoder), ("dec", ours.vae.decoder))}
    idx0 = torch.arange(args.batch, device=device)
    with draws["ours"].active():
        loss = ours.objective.loss(ours.vae, ours.x_train[idx0], idx0, args.n)
        loss.backward()
        ours.optimizer.step()
        synchronize(device)
    first_ours = time.perf_counter() - t0
    x = x.to(device)

    t0 = time.perf_counter()
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[act_name]
    plain = PlainVAE(784, args.hidden, args.z, act).to(device)
    plain.enc.load_state_dict(start["enc"]), plain.dec.load_state_dict(start["dec"])
    plain_opt = torch.optim.Adagrad(plain.parameters(), lr=0.02, foreach=True)
    with draws["plain"].active():
        plain.loss(x[:args.batch], args.n, analytic).backward()
        plain_opt.step()
        synchronize(device)
    first_plain = time.perf_counter() - t0
    twin = PlainVAE(784, args.hidden, args.z, act).to(device)
    twin.enc.load_state_dict(start["enc"]), twin.dec.load_state_dict(start["dec"])
    twin_opt = Adagrad(twin.parameters(), lr=0.02)
    with draws["twin"].active():  # the same first step as the other two, with other draws
        twin.loss(x[:args.batch], args.n, analytic).backward()
        twin_opt.step()

    # the same minibatch order as pyro-vae's trainer
    gens = {side: torch.Generator() for side in ("plain", "twin", "graphed")}
    for g in gens.values():
        g.set_state(ours.shuffle_generator.get_state())
    epochs = {
        "ours": lambda: ours.train_epoch()["train_elbo"],
        "plain": lambda: plain_epoch(lambda xb: plain_step(plain, plain_opt, xb, args.n, analytic), x, args.batch, gens["plain"]),
        "twin": lambda: plain_epoch(lambda xb: plain_step(twin, twin_opt, xb, args.n, analytic), x, args.batch, gens["twin"]),
    }
    if args.cuda_graphs:  # the plain twin (our Adagrad), captured: replayed steps against replayed steps
        graphed = PlainVAE(784, args.hidden, args.z, act).to(device)
        graphed.enc.load_state_dict(start["enc"]), graphed.dec.load_state_dict(start["dec"])
        graphed_opt = Adagrad(graphed.parameters(), lr=0.02)
        graphed_step = PlainGraphedStep(lambda xb: plain_step(graphed, graphed_opt, xb, args.n, analytic))
        epochs["graphed"] = lambda: plain_epoch(graphed_step, x, args.batch, gens["graphed"])
    times = {side: [] for side in epochs}
    curves = {side: [] for side in epochs}
    for _ in range(args.epochs):
        for side, epoch in epochs.items():
            with draws[side].active():
                s = time.perf_counter()
                curves[side].append(epoch())
                times[side].append(time.perf_counter() - s)
    elbo = {k: v[-1] for k, v in curves.items()}
    steps = (args.n + args.batch - 1) // args.batch
    med = {k: statistics.median(v) for k, v in times.items()}
    if args.fresh_first_step:
        with tempfile.TemporaryDirectory() as bytecode_dir:
            first_ours, first_plain = (first_step_seconds(side, args, bytecode_dir) for side in ("pyro-vae", "plain torch"))
    print(f"device {describe_device(device, args.threads)}, 784-{args.hidden}-{args.z} {act_name}, batch {args.batch}, objective {args.objective}, n {args.n}")
    print(f"{'':34s}{'s/epoch':>10s}{'steps/s':>10s}{'first step s':>14s}{'train ELBO':>12s}")
    print(f"{'pyro-vae':34s}{med['ours']:10.3f}{steps / med['ours']:10.1f}{first_ours:14.3f}{elbo['ours']:12.2f}")
    print(f"{'plain torch':34s}{med['plain']:10.3f}{steps / med['plain']:10.1f}{first_plain:14.3f}{elbo['plain']:12.2f}")
    print(f"{'plain torch + pyro-vae Adagrad':34s}{med['twin']:10.3f}{steps / med['twin']:10.1f}{'':14s}{elbo['twin']:12.2f}")
    if args.cuda_graphs:
        print(f"{'plain + our Adagrad, CUDA graph':34s}{med['graphed']:10.3f}{steps / med['graphed']:10.1f}{'':14s}{elbo['graphed']:12.2f}")
    labels = {"ours": "pyro-vae", "plain": "plain torch", "twin": "plain + our Adagrad", "graphed": "plain, CUDA graph"}
    for name, label in labels.items():
        if name not in curves:
            continue
        print(f"train ELBO by epoch, {label:20s} " + " ".join(f"{v:8.2f}" for v in curves[name]))
    if args.epochs > 1:
        # Epoch 1 averages the first steps, where Adagrad's sign-sized moves make runs that differ
        # only in their z draws diverge by hundreds of nats; compare from epoch 2 on. The two plain
        # runs (same math, other draws) give the size of that noise.
        def gap(a: str, b: str) -> float:
            return max(abs(u - v) for u, v in zip(curves[a][1:], curves[b][1:]))

        print(f"largest gap from epoch 2 on, nats per datapoint: pyro-vae vs plain torch (same z draws) {gap('ours', 'plain'):.2f}; "
              f"plain torch vs plain + our Adagrad (same math, other z draws) {gap('plain', 'twin'):.2f}")
    print(f"ratio pyro-vae / plain torch: {med['ours'] / med['plain']:.3f}")
    print(f"ratio pyro-vae / plain torch with the same optimizer: {med['ours'] / med['twin']:.3f}")
    print(paired_ratios_line("pyro-vae / plain torch", times["ours"], times["plain"], "epochs"))
    print(paired_ratios_line("pyro-vae / plain torch with the same optimizer", times["ours"], times["twin"], "epochs"))
    if args.cuda_graphs:
        print(f"ratio pyro-vae / plain torch, both as CUDA graphs: {med['ours'] / med['graphed']:.3f}")
        print(paired_ratios_line("pyro-vae / plain torch, both as CUDA graphs", times["ours"], times["graphed"], "epochs"))
    print("first step: " + (f"median of {FIRST_STEP_PROCESSES} fresh processes a side, from after `import torch` (pyro-vae's "
                             "includes importing pyro), with Python's bytecode cache as an installed package has it"
                            if args.fresh_first_step else "in this process (plain torch ran second)"))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--n", type=positive_int, default=10000)
    p.add_argument("--batch", type=positive_int, default=100)
    p.add_argument("--hidden", type=positive_int, default=500)
    p.add_argument("--z", type=positive_int, default=20)
    p.add_argument("--activation", default="tanh", choices=["tanh", "relu"])
    p.add_argument("--objective", default="trace_meanfield")
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--fresh-first-step", action="store_true", help="time each first step in a fresh process")
    p.add_argument("--cuda-graphs", action="store_true", help="pyro-vae with training.cuda_graphs, and a captured plain twin (CUDA)")
    main(p.parse_args())
