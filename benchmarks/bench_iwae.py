"""IWAE-k evaluation speed against its compute bound: the same matrix products alone, same run.

The estimator (``pyro_vae.estimators.iwae``: Pyro traces of model and guide, chunked) is timed on
the first ``--n`` MNIST test images (or random binary images with ``--random``), interleaved with
a loop that does only the decoder's and encoder's matrix products for the same chunks (the floor
any implementation must pay). Prints medians and the ratio.

    python benchmarks/bench_iwae.py --k 5000 --n 200 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pyro_vae import config as C
from pyro_vae.estimators import iwae
from pyro_vae.estimators.iwae import CPU_CHUNK_BYTES, bytes_per_particle, plan_chunks
from pyro_vae.model import build_vae


def matmul_bound(vae, x: torch.Tensor, k: int, kc: int, nc: int) -> None:
    """Only the Linear layers' products, on the shapes the estimator uses, chunk by chunk."""
    enc = [m for m in vae.encoder.modules() if isinstance(m, torch.nn.Linear)]
    dec = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for xb in x.split(nc):
            h = xb
            for layer in enc:
                h = h @ layer.weight.T
            done = 0
            while done < k:
                c = min(kc, k - done)
                z = torch.empty(c * xb.shape[0], vae.z_dim)
                for layer in dec:
                    z = z @ layer.weight.T
                done += c


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cfg = C.load("configs/aevb_mnist.yaml")
    if args.random:
        g = torch.Generator().manual_seed(0)
        x = torch.bernoulli(torch.full((args.n, 784), 0.15), generator=g)
    else:
        from pyro_vae.datasets import load_dataset

        x = load_dataset(cfg.data).x_test[: args.n]
    vae = build_vae(cfg.model, (1, 28, 28))
    kc, nc = plan_chunks(args.k, x.shape[0], bytes_per_particle(vae), args.memory_gb, CPU_CHUNK_BYTES)
    ours, bound = [], []
    for _ in range(args.repeats):
        s = time.perf_counter()
        est = iwae(vae, x, k=args.k, memory_gb=args.memory_gb)
        ours.append(time.perf_counter() - s)
        s = time.perf_counter()
        matmul_bound(vae, x, args.k, kc, nc)
        bound.append(time.perf_counter() - s)
    mo, mb = statistics.median(ours), statistics.median(bound)
    print(f"device cpu ({args.threads} threads), IWAE-{args.k} on {x.shape[0]} points, chunks {kc} particles x {nc} points")
    print(f"pyro-vae iwae   {mo:8.3f} s  (value {est.mean:.2f} +- {est.stderr:.2f}, untrained model)")
    print(f"matmul bound    {mb:8.3f} s")
    print(f"ratio pyro-vae / matmul bound: {mo / mb:.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--n", type=int, default=10000, help="test points (10000: the full MNIST test set)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-gb", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--random", action="store_true", help="random binary images instead of MNIST")
    main(p.parse_args())
