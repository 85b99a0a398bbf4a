"""HMC speed: the batched kernel against a plain-torch leapfrog loop on the same potential written
by hand, measured interleaved in the same run after one untimed trajectory of each (one trajectory
a side in turn; the ratio comes with the quartiles of the trajectories' paired ratios,
``paired.py``). The kernel runs twice: with the potential the estimators use (Pyro traces of the
model, compiled per shape where that is faster: ``pyro_vae.mcmc.potentials``) and with Pyro's
traces run eagerly at every evaluation.

Model: the paper's MNIST decoder (Nz-H-784, tanh, Bernoulli) with a N(0, I) prior; one chain per
datapoint for ``--points`` binary images; ``--leapfrog`` steps per trajectory.

    python benchmarks/bench_hmc.py --points 1000 --trajectories 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pyro_vae.cli import positive_int
from pyro_vae.speed import allocator
from pyro_vae import config as C
from pyro_vae.mcmc.hmc import BatchedHMC
from pyro_vae.mcmc.potentials import compiles, model_log_densities
from pyro_vae.config.build import vae_from_config
from pyro_vae.traces import log_densities
from pyro_vae.hardware import describe_device, resolve_device, synchronize
from pyro_vae.model import set_validation

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helper, also when loaded by path
from paired import paired_ratios_line  # noqa: E402


def plain_log_densities(vae, x):
    """(log p(z), log p(x | z)) of the paper's model written by hand: N(0, I) and the Bernoulli
    decoder's layers called directly, per chain and datapoint for z of shape (chains, points, Nz)."""
    lin1, lin2 = vae.decoder[0], vae.decoder[2]

    def log_prior(z):
        return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * 1.8378770664093453  # log(2 pi)

    def log_lik(z):
        logits = lin2(torch.tanh(lin1(z)))
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    return log_prior, log_lik


def plain_potential(vae, x):
    log_prior, log_lik = plain_log_densities(vae, x)
    return lambda z: -(log_prior(z) + log_lik(z))


def plain_hmc(potential, z, step, leapfrog, trajectories):
    """The same algorithm as BatchedHMC.step, written inline with no Pyro."""
    for _ in range(trajectories):
        z0 = z.detach().requires_grad_(True)
        u0 = potential(z0)
        (g,) = torch.autograd.grad(u0.sum(), z0)
        p0 = torch.randn_like(z)
        p = p0 - 0.5 * step * g
        zz = z
        for i in range(leapfrog):
            zz = (zz + step * p).detach().requires_grad_(True)
            u = potential(zz)
            (g,) = torch.autograd.grad(u.sum(), zz)
            if i < leapfrog - 1:
                p = p - step * g
        p = p - 0.5 * step * g
        log_accept = (u0 - u + 0.5 * (p0 * p0).sum(-1) - 0.5 * (p * p).sum(-1)).clamp(max=0).detach()
        accept = torch.rand_like(log_accept).log() < log_accept
        z = torch.where(accept.unsqueeze(-1), zz.detach(), z)
    return z


def main(args: argparse.Namespace) -> None:
    allocator.keep_freed_memory()  # as the pyro-vae command does: no allocator-dependent modes
    torch.set_num_threads(args.threads)
    cfg = C.load("aevb_mnist", [f"model.z_dim={args.z}", f"model.decoder.hidden=[{args.hidden}]", f"model.encoder.hidden=[{args.hidden}]"])
    set_validation(False)  # as in training and `pyro-vae evaluate`; the plain loop validates nothing
    device = resolve_device(args.device)
    vae = vae_from_config(cfg.model, (1, 28, 28)).to(device)
    vae.register_params = False  # as inside the estimators (`without_param_store`)
    x = torch.bernoulli(torch.full((args.points, 784), 0.15), generator=torch.Generator().manual_seed(0)).to(device)
    z = torch.zeros(1, args.points, args.z, device=device)

    densities = model_log_densities(vae, x)  # what AIS, App. D and MCEM use

    def pyro_potential(zz):
        prior, lik = densities(zz)
        return -(prior + lik)

    def eager_potential(zz):  # Pyro traces run at every evaluation
        prior, lik = log_densities(vae.model, {"z": zz}, x)
        return -(prior + lik)

    step = torch.full((1, args.points), 0.05, device=device)
    plain = plain_potential(vae, x)
    for potential in (pyro_potential, eager_potential):
        assert torch.allclose(plain(z + 0.1), potential(z + 0.1), rtol=1e-4, atol=1e-3), "the potentials differ"
    # One trajectory of each side in turn (A B C A B C ...), so that the machine's drift hits all alike.
    sides = {"ours": pyro_potential, "eager": eager_potential, "plain": plain}
    # one untimed trajectory of each first: the compiled potential's first gradients (TorchScript
    # profiles, then optimizes), and on a GPU each kernel's first launch, are one-time costs
    for k in ("ours", "eager"):
        BatchedHMC(sides[k], step_size=step, num_leapfrog=args.leapfrog).step(z)
    plain_hmc(plain, z, step.unsqueeze(-1), args.leapfrog, 1)
    synchronize(device)
    rounds = {k: [] for k in sides}  # seconds per trajectory, each side
    for _ in range(args.repeats):
        kernels = {k: BatchedHMC(sides[k], step_size=step, num_leapfrog=args.leapfrog) for k in ("ours", "eager")}
        state = dict.fromkeys(sides, z)
        for _ in range(args.trajectories):
            for k in sides:
                s = time.perf_counter()
                if k == "plain":
                    state[k] = plain_hmc(plain, state[k], step.unsqueeze(-1), args.leapfrog, 1)
                else:
                    state[k], _ = kernels[k].step(state[k])
                synchronize(device)
                rounds[k].append(time.perf_counter() - s)
    mean = {k: sum(v) / args.repeats for k, v in rounds.items()}
    how = "compiled per shape" if compiles(z) else "eager at this size"
    print(f"device {describe_device(device, args.threads)}, {args.points} chains, Nz={args.z}, decoder {args.z}-{args.hidden}-784, {args.leapfrog} leapfrog steps")
    # Same sampling work on all sides: trajectories of all chains (the batched kernel reuses the
    # gradient at its last state, the plain loop recomputes it).
    print(f"batched HMC, estimators' potential ({how})  {args.trajectories / mean['ours']:8.2f} trajectories/s  ({mean['ours']:.3f} s)")
    print(f"batched HMC, eager Pyro traces          {args.trajectories / mean['eager']:8.2f} trajectories/s  ({mean['eager']:.3f} s)")
    print(f"plain torch leapfrog loop               {args.trajectories / mean['plain']:8.2f} trajectories/s  ({mean['plain']:.3f} s)")
    print(f"ratio batched HMC / plain loop (time): {mean['ours'] / mean['plain']:.3f}")
    print(f"ratio batched HMC, eager traces / plain loop (time): {mean['eager'] / mean['plain']:.3f}")
    print(paired_ratios_line("batched HMC / plain loop (time)", rounds["ours"], rounds["plain"], "trajectories"))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=positive_int, default=1000)
    p.add_argument("--z", type=positive_int, default=3)
    p.add_argument("--hidden", type=positive_int, default=100)
    p.add_argument("--leapfrog", type=positive_int, default=10)
    p.add_argument("--trajectories", type=positive_int, default=20)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    main(p.parse_args())
