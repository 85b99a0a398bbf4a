"""log p(x) of a Pyro model written by hand, by every estimator, beside its closed form.

The model has a positive latent, so the samplers move on log tau (``biject_to``, as Pyro's HMC)::

    tau ~ Gamma(a, b),   x_j | tau ~ N(0, 1 / tau)   for j = 1..D

and its marginal is a multivariate Student-t with 2a degrees of freedom:

    log p(x) = a log b + lgamma(a + D/2) - lgamma(a) - (D/2) log 2 pi - (a + D/2) log(b + |x|^2 / 2).

The guide, q(tau | x) = LogNormal(0, 1), does not read x: the estimators must do the work. Each
estimate is reported with its standard error over the points and its paired difference from the
exact value (mean and standard error of the per-point differences); BDMC brackets log p(x) of
points simulated from the model, and the ELBOs of the guide and of q* (a Gaussian in log tau fitted
per point) are the gap report's two bounds. Writes ``own_model.md`` and ``own_model.csv`` into
``--out``.

    python examples/own_model.py --n 100
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from pyro_vae import estimators
import experiments as X
from pyro_vae.cli import device_arg, folder_arg, positive_int, seed_arg
from pyro_vae.hardware import resolve_device
from pyro_vae.runs.compare import paired_difference


class StudentT:
    """The model, its guide and its exact log p(x), for ``dim``-dimensional points."""

    def __init__(self, dim: int, a: float = 3.0, b: float = 2.0) -> None:
        self.dim, self.a, self.b = dim, a, b

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            tau = pyro.sample("tau", dist.Gamma(x.new_tensor(self.a), x.new_tensor(self.b)))
            noise = dist.Normal(x.new_zeros(()), tau.rsqrt().unsqueeze(-1)).expand(tau.shape + (self.dim,))
            pyro.sample("x", noise.to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("tau", dist.LogNormal(x.new_zeros(()), x.new_ones(())))

    def sample(self, n: int, device: str) -> torch.Tensor:
        """``n`` points drawn from the model, ``(n, dim)`` on ``device``."""
        with torch.no_grad():
            trace = pyro.poutine.trace(pyro.poutine.uncondition(self.model)).get_trace(torch.zeros(n, self.dim, device=device))
        return trace.nodes["x"]["value"]

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        a, b, d = self.a, self.b, self.dim
        return (a * math.log(b) + math.lgamma(a + d / 2) - math.lgamma(a) - d / 2 * math.log(2 * math.pi)
                - (a + d / 2) * torch.log(b + 0.5 * (x.double() ** 2).sum(-1)))


def main(args: argparse.Namespace) -> None:
    truth = StudentT(args.dim)
    torch.manual_seed(args.seed)
    x = truth.sample(args.n, str(resolve_device(args.device)))
    exact = truth.log_px(x).cpu()
    runs = {
        f"IWAE-{args.k}": lambda: estimators.iwae(truth.model, truth.guide, x, k=args.k),
        f"AIS, {args.ais_steps} steps": lambda: estimators.ais(truth.model, truth.guide, x, num_steps=args.ais_steps),
        f"App. D (HMC), {args.hmc_samples} draws": lambda: estimators.hmc_marginal_likelihood(
            truth.model, truth.guide, x, num_samples=args.hmc_samples, num_warmup=args.hmc_samples),
        "ELBO of the guide": lambda: estimators.elbo(truth.model, truth.guide, x, num_samples=100),
        "ELBO of q* (a Gaussian in log tau per point)": lambda: estimators.optimise_local_gaussians(truth.model, truth.guide, x),
    }
    rows = []
    for name, estimate in runs.items():
        start = time.perf_counter()
        result = estimate()
        seconds = time.perf_counter() - start
        paired = paired_difference(exact.tolist(), result.per_datapoint.tolist())
        rows.append({"estimator": name, "log_px": result.mean, "stderr": result.stderr,
                     "minus_exact": f"{paired['difference']:+.3f} +- {paired['stderr']:.3f}", "seconds": seconds})
        print(f"{name}: {result.mean:.3f} +- {result.stderr:.3f}, minus exact {rows[-1]['minus_exact']} ({seconds:.1f} s)")
    start = time.perf_counter()
    bdmc = estimators.bdmc(truth.model, truth.guide, x=x, num_points=args.bdmc_points, num_steps=args.ais_steps)
    rows.append({"estimator": f"BDMC gap, {args.bdmc_points} simulated points (upper - lower)", "log_px": bdmc["gap_mean"],
                 "stderr": bdmc["gap_stderr"], "minus_exact": "", "seconds": time.perf_counter() - start})
    print(f"BDMC gap: {bdmc['gap_mean']:.3f} +- {bdmc['gap_stderr']:.3f}")
    exact_row = {"estimator": "exact (Student-t)", "log_px": float(exact.mean()), "stderr": float(exact.std() / math.sqrt(len(exact))),
                 "minus_exact": "", "seconds": 0.0}
    out = Path(args.out)
    X.write_csv([exact_row, *rows], out / "own_model.csv")
    X.write_markdown([exact_row, *rows], ["estimator", "log_px", "stderr", "minus_exact", "seconds"], out / "own_model.md",
                     f"log p(x) of a hand-written Pyro model (Gamma precision, D = {args.dim}), {args.n} points",
                     [f"Command: `{getattr(args, 'command', 'python examples/own_model.py')}`"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=positive_int, default=100, help="points simulated from the model (default 100)")
    p.add_argument("--dim", type=positive_int, default=5, help="D, the points' dimension (default 5)")
    p.add_argument("--k", type=positive_int, default=5000, help="IWAE particles (default 5000)")
    p.add_argument("--ais-steps", type=positive_int, default=1000, help="AIS and BDMC temperatures (default 1000)")
    p.add_argument("--hmc-samples", type=positive_int, default=200, help="App. D draws (and warmup) per chain (default 200)")
    p.add_argument("--bdmc-points", type=positive_int, default=20, help="points BDMC simulates (default 20)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--out", type=folder_arg, default="results/own_model")
    X.run_script(main, p)
