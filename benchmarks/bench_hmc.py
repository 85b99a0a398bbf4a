"""HMC speed: the batched kernel (potential from Pyro traces of the model) against a plain-torch
leapfrog loop on the same potential written by hand, measured interleaved in the same run.

Model: the paper's MNIST decoder (Nz-H-784, tanh, Bernoulli) with a N(0, I) prior; one chain per
datapoint for ``--points`` binary images; ``--leapfrog`` steps per trajectory.

    python benchmarks/bench_hmc.py --points 1000 --trajectories 20
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pyro_vae import config as C
from pyro_vae.estimators.hmc import BatchedHMC
from pyro_vae.model import build_vae
from pyro_vae.traces import log_densities
from pyro_vae.train import describe_device, resolve_device, set_validation, synchronize


def plain_potential(vae, x):
    lin1, lin2 = vae.decoder[0], vae.decoder[2]

    def potential(z):
        logits = lin2(torch.tanh(lin1(z)))
        log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_prior = -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * 1.8378770664093453
        return -(log_prior + log_lik)

    return potential


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
    torch.set_num_threads(args.threads)
    cfg = C.load("configs/aevb_mnist.yaml", [f"model.z_dim={args.z}", f"model.decoder.hidden=[{args.hidden}]", f"model.encoder.hidden=[{args.hidden}]"])
    set_validation(False)  # as in training and `pyro-vae evaluate`; the plain loop validates nothing
    device = resolve_device(args.device)
    vae = build_vae(cfg.model, (1, 28, 28)).to(device)
    vae.register_params = False  # as inside the estimators (`without_param_store`)
    x = torch.bernoulli(torch.full((args.points, 784), 0.15), generator=torch.Generator().manual_seed(0)).to(device)
    z = torch.zeros(1, args.points, args.z, device=device)

    def pyro_potential(zz):
        prior, lik = log_densities(vae.model, {"z": zz}, x)
        return -(prior + lik)

    step = torch.full((1, args.points), 0.05, device=device)
    plain = plain_potential(vae, x)
    assert torch.allclose(plain(z + 0.1), pyro_potential(z + 0.1), rtol=1e-4, atol=1e-3), "the two potentials differ"
    # One trajectory of each side in turn (A B A B ...), so that the machine's drift hits both alike.
    ours_t = plain_t = 0.0
    for _ in range(args.repeats):
        kernel = BatchedHMC(pyro_potential, step_size=step, num_leapfrog=args.leapfrog)
        zz, zp = z, z
        for _ in range(args.trajectories):
            s = time.perf_counter()
            zz, _ = kernel.step(zz)
            synchronize(device)
            ours_t += time.perf_counter() - s
            s = time.perf_counter()
            zp = plain_hmc(plain, zp, step.unsqueeze(-1), args.leapfrog, 1)
            synchronize(device)
            plain_t += time.perf_counter() - s
    mo, mp = ours_t / args.repeats, plain_t / args.repeats
    print(f"device {describe_device(device, args.threads)}, {args.points} chains, Nz={args.z}, decoder {args.z}-{args.hidden}-784, {args.leapfrog} leapfrog steps")
    # Same sampling work on both sides: trajectories of all chains (the batched kernel reuses the
    # gradient at its last state, the plain loop recomputes it).
    print(f"batched HMC (Pyro traces)  {args.trajectories / mo:8.2f} trajectories/s  ({mo:.3f} s)")
    print(f"plain torch leapfrog loop  {args.trajectories / mp:8.2f} trajectories/s  ({mp:.3f} s)")
    print(f"ratio batched HMC / plain loop (time): {mo / mp:.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--z", type=int, default=3)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--leapfrog", type=int, default=10)
    p.add_argument("--trajectories", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    main(p.parse_args())
