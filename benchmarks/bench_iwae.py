"""IWAE-k evaluation speed against its compute bound and against plain PyTorch, same run.

These are timed on the first ``--n`` MNIST test images (or random binary images with
``--random``), one datapoint chunk at a time (chunks planned as ``iwae`` plans them on the device)
and interleaved (A B C A B C ...), after one untimed round of each, so that the machine's drift
hits all alike (the main ratios also come with the quartiles of the chunks' paired ratios,
``paired.py``):

* pyro-vae: the estimator's inner loop (``log_weight_stats``: Pyro traces of model and guide);
* plain torch: the same IWAE-k written by hand for the paper's model (Gaussian encoder, standard
  normal prior, Bernoulli decoder scored with ``binary_cross_entropy_with_logits``);
* tuned torch: the same again with every speed trick pyro-vae's own modules use (its fused oneDNN
  layers, the two-pass Bernoulli log-density ``softplus(y) - x y``, log q from the drawn noise):
  what a hand-written eager implementation can reach, the yardstick for Pyro's overhead;
* the model's arithmetic alone (networks and the likelihood's softplus, no sampling, no Pyro);
* the matrix products alone on the same chunk shapes (the floor any implementation must pay),
  computed both by torch's default BLAS and, on CPU, by oneDNN (which pyro-vae's networks use
  when evaluating); the bound is the faster of the two, so that it is the same floor for all;
* last, one call of ``iwae`` over all the points, as users call it (planning included), against
  the tuned loop's total.

    python benchmarks/bench_iwae.py --k 5000 --n 100
    python benchmarks/bench_iwae.py --k 5000 --n 100 --run runs/aevb_mnist   # a trained model
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pyro_vae.cli import positive_int
from pyro_vae.speed import allocator
from pyro_vae import config as C
from pyro_vae.estimators.iwae import CPU_CHUNK_BYTES, iwae, log_weight_stats, plan_chunks
from pyro_vae.estimators.memory import bytes_per_particle
from pyro_vae.config.build import vae_from_config
from pyro_vae.speed.fused_linear import available as fused_linear_available
from pyro_vae.hardware import describe_device, resolve_device, synchronize
from pyro_vae.model import set_validation

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helper, also when loaded by path
from paired import paired_ratios_line  # noqa: E402


def matmul_bound(vae, x: torch.Tensor, k: int, kc: int, nc: int, z: torch.Tensor, product) -> None:
    """Only the Linear layers' products (no bias, no activation), on the shapes the estimator
    uses, chunk by chunk, each computed by ``product(h, weight)``; ``z``: (kc, nc, z_dim) draws
    from N(0, 1) made beforehand (realistic values: uninitialised memory may hold denormals)."""
    enc = [m for m in vae.encoder.modules() if isinstance(m, torch.nn.Linear)]
    dec = [m for m in vae.decoder.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for xb in x.split(nc):
            h = xb
            for layer in enc:
                h = product(h, layer.weight)
            done = 0
            while done < k:
                c = min(kc, k - done)
                h = z[:c, : xb.shape[0]].reshape(-1, vae.z_dim)
                for layer in dec:
                    h = product(h, layer.weight)
                done += c


def networks_and_softplus(vae, x: torch.Tensor, k: int, kc: int, nc: int, z: torch.Tensor) -> None:
    """The unavoidable arithmetic of the model alone, chunk by chunk: the encoder and decoder
    (products, biases, tanh) and the softplus of the Bernoulli log-density, without sampling,
    without the prior and guide densities and without Pyro. What pyro-vae spends above this is
    its own overhead; what this spends above the matrix products is the model's elementwise math."""
    with torch.no_grad():
        for xb in x.split(nc):
            vae.encoder(xb)
            done = 0
            while done < k:
                c = min(kc, k - done)
                F.softplus(vae.decoder(z[:c, : xb.shape[0]])).sum(-1)
                done += c


def blas_product(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return h @ weight.T  # torch's default matrix product (MKL on x86 CPUs, cuBLAS on CUDA)


def onednn_product(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(h, weight, None, "none", [], "")  # oneDNN's


def plain_networks(vae) -> tuple:
    """Standard torch layers (Linear, nn.Tanh) holding the VAE's weights: the plain side must not
    benefit from pyro-vae's own modules."""
    def copy(net: torch.nn.Module) -> torch.nn.Sequential:
        layers = []
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                layers.append(torch.nn.Linear(m.in_features, m.out_features).to(m.weight.device))
                layers[-1].load_state_dict(m.state_dict())
                layers.append(torch.nn.Tanh())
        return torch.nn.Sequential(*layers[:-1])

    return copy(vae.encoder), copy(vae.decoder)


def _stats_over_chunks(log_weights, batch: int, k: int, kc: int, device: torch.device):
    """logsumexp of log w and of 2 log w over k particles, ``log_weights(c)`` giving (c, batch)
    log weights per chunk: the running combination ``log_weight_stats`` does."""
    lse = torch.full((batch,), -math.inf, dtype=torch.float64, device=device)
    lse2 = lse.clone()
    done = 0
    while done < k:
        c = min(kc, k - done)
        log_w = log_weights(c).double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
        done += c
    return lse, lse2


@torch.no_grad()
def plain_log_weight_stats(vae, x: torch.Tensor, k: int, kc: int, networks: tuple):
    """Hand-written IWAE-k for the paper's model: the same outputs as ``log_weight_stats``."""
    d = vae.z_dim
    encoder, decoder = networks
    h = encoder(x)
    mu, sd = h[:, :d], (0.5 * h[:, d:]).exp()

    def log_weights(c: int) -> torch.Tensor:
        eps = torch.randn(c, x.shape[0], d, device=x.device)
        z = mu + eps * sd
        logits = decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -0.5 * (z**2).sum(-1) - 0.5 * d * math.log(2 * math.pi)
        log_qz = -0.5 * (eps**2).sum(-1) - sd.log().sum(-1) - 0.5 * d * math.log(2 * math.pi)
        return log_px + log_pz - log_qz

    return _stats_over_chunks(log_weights, x.shape[0], k, kc, x.device)


@torch.no_grad()
def tuned_log_weight_stats(vae, x: torch.Tensor, k: int, kc: int):
    """``plain_log_weight_stats`` with pyro-vae's networks (fused layers on CPU) and cheaper
    densities: the fastest eager IWAE-k we know for the paper's model."""
    d = vae.z_dim
    h = vae.encoder(x)
    mu, sd = h[:, :d], (0.5 * h[:, d:]).exp()
    log_norm = sd.log().sum(-1)  # (batch,)

    def log_weights(c: int) -> torch.Tensor:
        eps = torch.randn(c, x.shape[0], d, device=x.device)
        z = mu + eps * sd
        logits = vae.decoder(z)
        log_w = F.softplus(logits).addcmul_(x, logits, value=-1.0).sum(-1).neg_()  # log p(x|z)
        log_w += 0.5 * ((eps * eps).sum(-1) - (z * z).sum(-1))  # log p(z) - log q(z|x), 2 pi cancels
        return log_w.add_(log_norm)

    return _stats_over_chunks(log_weights, x.shape[0], k, kc, x.device)


def main(args: argparse.Namespace) -> None:
    allocator.keep_freed_memory()  # as the pyro-vae command does: no allocator-dependent modes
    torch.set_num_threads(args.threads)
    set_validation(False)  # as in `pyro-vae evaluate`
    device = resolve_device(args.device)
    cfg = C.load("aevb_mnist")
    if args.run:
        # a trained model on its own test set: what `pyro-vae evaluate` times (its decoder's logits
        # are far from zero, where softplus is cheaper than at an untrained model's)
        from pyro_vae.runs.load import load_run

        trained = load_run(args.run, device=args.device)
        vae, x = trained.vae, trained.x_test[: args.n]
        model_name = f"trained model of {args.run}"
    else:
        if args.random:
            g = torch.Generator().manual_seed(0)
            x = torch.bernoulli(torch.full((args.n, 784), 0.15), generator=g)
        else:
            from pyro_vae.data.datasets import load_dataset

            x = load_dataset(cfg.data).x_test[: args.n]
        vae = vae_from_config(cfg.model, (1, 28, 28))
        model_name = "untrained paper model"
    x, vae = x.to(device), vae.to(device)
    vae.register_params = False  # as inside `iwae` (`without_param_store`)
    # the chunk plan of `iwae` on this device (on a GPU: half its free memory, unless --memory-gb)
    target = CPU_CHUNK_BYTES if device.type == "cpu" else None
    kc, nc = plan_chunks(args.k, x.shape[0], bytes_per_particle(vae, x), args.memory_gb, target, device)

    def timed(fn, *fn_args):
        start = time.perf_counter()
        out = fn(*fn_args)
        synchronize(device)
        return out, time.perf_counter() - start

    networks = plain_networks(vae)
    products = {"blas": blas_product}
    if device.type == "cpu" and fused_linear_available():
        products["onednn"] = onednn_product
    z = torch.randn(kc, nc, vae.z_dim, device=device)
    # seconds per datapoint chunk, for each side (the rounds of the paired ratios)
    rounds = {side: [] for side in ("ours", "plain", "tuned", "model_math", *products)}
    # per-image results written in place, as `iwae` does: a list of small tensors kept between the
    # chunks' big blocks fragments the heap and would slow all sides by page faults
    values, plain_values, tuned_values = (torch.zeros((), dtype=torch.float64, device=device) for _ in range(3))
    # one untimed round first: on a GPU the first launch of each kernel loads it and cuBLAS makes
    # its handles, a cost that would otherwise fall on whichever side runs first
    first = x[:nc]
    log_weight_stats(vae.model, vae.guide, first, args.k, kc)
    plain_log_weight_stats(vae, first, args.k, kc, networks)
    tuned_log_weight_stats(vae, first, args.k, kc)
    for product in products.values():
        matmul_bound(vae, first, args.k, kc, nc, z, product)
    networks_and_softplus(vae, first, args.k, kc, nc, z)
    synchronize(device)
    for _ in range(args.repeats):
        for xb in x.split(nc):
            (lse, _), seconds = timed(log_weight_stats, vae.model, vae.guide, xb, args.k, kc)
            rounds["ours"].append(seconds)
            (plain_lse, _), seconds = timed(plain_log_weight_stats, vae, xb, args.k, kc, networks)
            rounds["plain"].append(seconds)
            (tuned_lse, _), seconds = timed(tuned_log_weight_stats, vae, xb, args.k, kc)
            rounds["tuned"].append(seconds)
            for name, product in products.items():
                rounds[name].append(timed(matmul_bound, vae, xb, args.k, kc, nc, z, product)[1])
            rounds["model_math"].append(timed(networks_and_softplus, vae, xb, args.k, kc, nc, z)[1])
            values += lse.sum()
            plain_values += plain_lse.sum()
            tuned_values += tuned_lse.sum()
    # the estimator as users call it (chunk planning, result buffers, the per-point ESS), once
    _, whole_call = timed(iwae, vae, x, args.k, args.memory_gb)
    ours, plain, tuned, model_math = (sum(rounds[side]) for side in ("ours", "plain", "tuned", "model_math"))
    bounds = {name: sum(rounds[name]) for name in products}
    points = args.repeats * x.shape[0]
    value, plain_value, tuned_value = (float(v) / points - math.log(args.k) for v in (values, plain_values, tuned_values))
    print(f"device {describe_device(device, args.threads)}, IWAE-{args.k} on {x.shape[0]} points x {args.repeats}, "
          f"chunks {kc} particles x {nc} points, {model_name}")
    print(f"pyro-vae        {ours:8.3f} s  (mean log p(x) {value:.2f})")
    print(f"plain torch     {plain:8.3f} s  (mean log p(x) {plain_value:.2f})")
    print(f"tuned torch     {tuned:8.3f} s  (mean log p(x) {tuned_value:.2f}; pyro-vae's fused layers, no Pyro)")
    print(f"pyro-vae iwae() {whole_call:8.3f} s  (one call over the {x.shape[0]} points, its planning included)")
    for name, seconds in bounds.items():
        print(f"matmul {name:<8s} {seconds:8.3f} s")
    bound_library = min(bounds, key=bounds.get)
    bound = bounds[bound_library]
    print(f"matmul bound    {bound:8.3f} s  (the faster product library)")
    print(f"networks + softplus {model_math:8.3f} s  (the model's arithmetic alone: no sampling, no Pyro)")
    print(f"ratio pyro-vae / matmul bound: {ours / bound:.3f}")
    print(f"ratio plain torch / matmul bound: {plain / bound:.3f}")
    print(f"ratio tuned torch / matmul bound: {tuned / bound:.3f}")
    print(f"ratio pyro-vae / plain torch: {ours / plain:.3f}")
    print(f"ratio pyro-vae / tuned torch: {ours / tuned:.3f}")
    print(f"ratio pyro-vae iwae() call / tuned torch: {whole_call / (tuned / args.repeats):.3f}")
    print(f"ratio networks + softplus / matmul bound: {model_math / bound:.3f}")
    print(f"ratio pyro-vae / networks + softplus: {ours / model_math:.3f}")
    chunks = "datapoint chunks"
    print(paired_ratios_line("pyro-vae / matmul bound", rounds["ours"], rounds[bound_library], chunks))
    print(paired_ratios_line("tuned torch / matmul bound", rounds["tuned"], rounds[bound_library], chunks))
    print(paired_ratios_line("pyro-vae / tuned torch", rounds["ours"], rounds["tuned"], chunks))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=positive_int, default=5000)
    p.add_argument("--n", type=positive_int, default=100, help="test points (10000: the full MNIST test set)")
    p.add_argument("--repeats", type=positive_int, default=1, help="passes over the points")
    p.add_argument("--memory-gb", type=float, default=None, help="cap on a chunk's memory (default: as `iwae`, half a GPU's free memory)")
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--random", action="store_true", help="random binary images instead of MNIST")
    p.add_argument("--run", help="a trained run folder: its model and test set (else an untrained paper model)")
    main(p.parse_args())
