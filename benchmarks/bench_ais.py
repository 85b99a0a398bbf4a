"""AIS speed: ``pyro_vae.estimators.ais`` against a plain-torch AIS loop on the same potential written
by hand, whole estimates interleaved in the same run (A B A B ..., after one untimed estimate of
each; the ratio comes with the quartiles of the rounds' paired ratios, ``paired.py``).

Both sides run the same algorithm (Neal 2001): chains start from the prior N(0, I), and at each of
``--steps`` inverse temperatures of the sigmoid schedule the log weight gains
``(beta_t - beta_{t-1}) log p(x | z)`` and one HMC transition (``--leapfrog`` steps, a fixed step
size, no pilot run) leaves ``p(z) p(x | z)^beta_t`` invariant. pyro-vae: the estimator as users
call it (``adapt=False``), with its densities from Pyro traces of the model, its chunk planning
and its result (the chains' final states as ArviZ data). Plain torch: the same loop inline, the
decoder's layers called directly, the Bernoulli density by ``binary_cross_entropy_with_logits``.
The two estimates draw different random numbers; their means agree to the Monte Carlo noise.

Model: the paper's MNIST decoder (Nz-H-784, tanh, Bernoulli), untrained, on ``--points`` random
binary images, ``--chains`` chains each.

    python benchmarks/bench_ais.py --points 50 --chains 4 --steps 50
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from pyro_vae.cli import positive_int
from pyro_vae import config as C
from pyro_vae.config.build import vae_from_config
from pyro_vae.estimators.ais import ais, beta_schedule
from pyro_vae.hardware import describe_device, resolve_device, synchronize
from pyro_vae.model import set_validation
from pyro_vae.speed import allocator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers, also when loaded by path
from bench_hmc import plain_hmc, plain_log_densities  # noqa: E402
from paired import paired_ratios_line  # noqa: E402


def plain_ais(vae, x: torch.Tensor, chains: int, steps: int, leapfrog: int, step_size: float) -> torch.Tensor:
    """log p(x) per datapoint by AIS from the prior, written inline: ``(points,)``."""
    log_prior, log_lik = plain_log_densities(vae, x)
    d = vae.z_dim
    betas = beta_schedule(steps, "sigmoid")
    z = torch.randn(chains, x.shape[0], d, device=x.device)
    log_w = torch.zeros(chains, x.shape[0], dtype=torch.float64, device=x.device)
    step = torch.full((chains, x.shape[0], 1), step_size, device=x.device)
    for t in range(1, steps + 1):
        with torch.no_grad():
            log_w += float(betas[t] - betas[t - 1]) * log_lik(z).double()
        beta = float(betas[t])
        z = plain_hmc(lambda zz: -(log_prior(zz) + beta * log_lik(zz)), z, step, leapfrog, 1)
    return torch.logsumexp(log_w, 0) - math.log(chains)


def main(args: argparse.Namespace) -> None:
    allocator.keep_freed_memory()  # as the pyro-vae command does: no allocator-dependent modes
    torch.set_num_threads(args.threads)
    set_validation(False)  # as in `pyro-vae evaluate`; the plain loop validates nothing
    device = resolve_device(args.device)
    cfg = C.load("aevb_mnist", [f"model.z_dim={args.z}", f"model.decoder.hidden=[{args.hidden}]", f"model.encoder.hidden=[{args.hidden}]"])
    vae = vae_from_config(cfg.model, (1, 28, 28)).to(device)
    x = torch.bernoulli(torch.full((args.points, 784), 0.15), generator=torch.Generator().manual_seed(0)).to(device)
    settings = dict(num_steps=args.steps, num_chains=args.chains, num_leapfrog=args.leapfrog, step_size=args.step_size)

    def ours() -> torch.Tensor:
        return ais(vae, x, adapt=False, start="prior", schedule="sigmoid", **settings).per_datapoint

    def plain() -> torch.Tensor:
        return plain_ais(vae, x, args.chains, args.steps, args.leapfrog, args.step_size)

    sides = {"ours": ours, "plain": plain}
    for fn in sides.values():  # untimed: first launches, the compiled potential's profiling runs, imports
        fn()
    rounds = {k: [] for k in sides}
    estimates = {k: [] for k in sides}
    for _ in range(args.repeats):
        for k, fn in sides.items():
            synchronize(device)
            start = time.perf_counter()
            estimate = fn()
            synchronize(device)
            rounds[k].append(time.perf_counter() - start)
            estimates[k].append(float(estimate.double().mean()))
    median = {k: sorted(v)[len(v) // 2] for k, v in rounds.items()}
    mean_log_px = {k: sum(v) / len(v) for k, v in estimates.items()}
    print(f"device {describe_device(device, args.threads)}, AIS from the prior, {args.points} points x {args.chains} chains, "
          f"{args.steps} steps x {args.leapfrog} leapfrog, decoder {args.z}-{args.hidden}-784, {args.repeats} rounds")
    print(f"pyro-vae ais()          {median['ours']:8.3f} s  (mean log p(x) {mean_log_px['ours']:.2f})")
    print(f"plain torch AIS loop    {median['plain']:8.3f} s  (mean log p(x) {mean_log_px['plain']:.2f})")
    print(f"ratio pyro-vae ais() / plain loop (time): {median['ours'] / median['plain']:.3f}")
    print(paired_ratios_line("pyro-vae ais() / plain loop (time)", rounds["ours"], rounds["plain"], "rounds"))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=positive_int, default=50)
    p.add_argument("--chains", type=positive_int, default=4)
    p.add_argument("--steps", type=positive_int, default=50, help="inverse temperatures (transitions)")
    p.add_argument("--leapfrog", type=positive_int, default=10)
    p.add_argument("--step-size", type=float, default=0.05)
    p.add_argument("--z", type=positive_int, default=20)
    p.add_argument("--hidden", type=positive_int, default=500)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    main(p.parse_args())
