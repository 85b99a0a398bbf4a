"""The benchmark suite: every configuration the speed targets name, one table at the end.

Runs each benchmark script in its own process (so that one-time costs and allocator state do not
leak between them), prints their full output, then a summary of the ratios (each measured
interleaved within its own run):

* training, paper MLP 784-500-20 tanh and the 784-400-20 ReLU shape, batch 100 and 1000,
  analytic KL (``trace_meanfield``) and Monte Carlo KL (``trace``), and at batch 100 their JIT
  variants;
  first step in a fresh process;
* IWAE-5000 against the matrix-product bound and a hand-written PyTorch IWAE (on a GPU with a
  trained run: over its whole test set);
* HMC against a plain-torch leapfrog loop, at 100 chains (an MCEM minibatch) and 1000 (AIS);
* the AIS estimator against a plain-torch AIS loop on the same potential.

    python benchmarks/run_all.py            # about 4 minutes on 2 CPU threads (5 with --run)
    python benchmarks/run_all.py --quick    # smaller sizes, for a smoke test
    python benchmarks/run_all.py --device cuda
    python benchmarks/run_all.py --run runs/aevb_mnist   # adds IWAE-5000 on a trained model
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from pyro_vae.cli import positive_int

HERE = Path(__file__).resolve().parent


def training_runs(quick: bool, device: str = "cpu") -> List[Tuple[str, List[str]]]:
    """The training benchmarks: two network shapes, two batch sizes, the ELBO objectives. On CUDA
    the paper's model at batch 100 only (the GPU's time is short, and the host-bound case is the
    one its target is about), and the same with its steps replayed as CUDA graphs, on 50k-point
    epochs (the paper's epoch: the target is under 0.3 s)."""
    n, epochs = ("2000", "3") if quick else ("10000", "7")
    cuda = device.startswith("cuda")
    runs = []
    for act, hidden in (("tanh", "500"),) if cuda else (("tanh", "500"), ("relu", "400")):
        for batch in ("100",) if cuda else ("100", "1000"):
            for objective in ("trace_meanfield", "jit_trace_meanfield", "trace", "jit_trace"):
                if batch == "1000" and objective.startswith("jit"):  # JIT pays off below about 256 rows
                    continue
                label = f"train 784-{hidden}-20 {act}, batch {batch}, {objective}"
                runs.append((label, ["bench_train.py", "--activation", act, "--hidden", hidden, "--batch", batch,
                                     "--objective", objective, "--n", n, "--epochs", epochs]))
    runs[0][1].append("--fresh-first-step")
    if cuda:
        for objective in ("trace_meanfield", "jit_trace_meanfield"):
            runs.append((f"train 784-500-20 tanh, batch 100, {objective}, CUDA graphs, 50k points",
                         ["bench_train.py", "--batch", "100", "--objective", objective, "--n", "5000" if quick else "50000",
                          "--epochs", epochs, "--cuda-graphs"]))
    return runs


def iwae_runs(quick: bool, device: str = "cpu", run: Optional[str] = None) -> List[Tuple[str, List[str]]]:
    """IWAE-5000 on an untrained paper model and random images; with ``run``, on that trained model
    and its own test images, as ``pyro-vae evaluate`` runs it: the first 100 on CPU, all 10k on a
    GPU (the target's measure: the whole test set against the tuned loop)."""
    runs = [("IWAE-5000" if not quick else "IWAE-500",
             ["bench_iwae.py", "--random", "--n", "10" if quick else "100", "--k", "500" if quick else "5000"])]
    if run:
        n = "10000" if device.startswith("cuda") and not quick else "100"
        runs.append((f"IWAE-5000, trained model, {n} test images", ["bench_iwae.py", "--run", run, "--n", n, "--k", "5000"]))
    return runs


def ais_runs(quick: bool, device: str = "cpu") -> List[Tuple[str, List[str]]]:
    """AIS from the prior on the main job's networks (20-500-784) against a plain-torch AIS loop:
    50 points x 4 chains on CPU; on a GPU 1000 points x 16 chains (Wu et al.'s chain count)."""
    if quick:
        points, chains, steps = "10", "2", "10"
    elif device.startswith("cuda"):
        points, chains, steps = "1000", "16", "100"
    else:
        points, chains, steps = "50", "4", "50"
    return [(f"AIS, {points} points x {chains} chains, {steps} steps",
             ["bench_ais.py", "--points", points, "--chains", chains, "--steps", steps, "--repeats", "3" if quick else "5"])]


def summarize(label: str, output: str, with_first_step: bool) -> str:
    """One markdown row from a benchmark's printed output: its ratio lines, each with the quartiles
    of its rounds' paired ratios where the benchmark prints them (and the first step)."""
    ratios = re.findall(r"^ratio (.+?): ([0-9.]+)$", output, flags=re.M)
    quartiles = dict(re.findall(r"^paired (.+?): median [0-9.]+, quartiles ([0-9.]+-[0-9.]+) over", output, flags=re.M))
    cells = "; ".join(f"{name} {value}" + (f" (rounds {quartiles[name]})" if name in quartiles else "") for name, value in ratios)
    first = re.search(r"^pyro-vae\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)", output, flags=re.M)
    if with_first_step and first:
        cells += f"; first step {first.group(1)} s (fresh process)"
    return f"| {label} | {cells} |"


def main(args: argparse.Namespace) -> None:
    runs = training_runs(args.quick, args.device) + iwae_runs(args.quick, args.device, args.run)
    # 100 chains: one per datapoint of an MCEM minibatch (compiled potentials); 1000: AIS-sized (eager, fused layers)
    for chains in (["200"] if args.quick else ["100", "1000"]):
        # 100 chains: 50 trajectories (about 0.4 s a side; 10 made single runs swing by 0.15)
        trajectories = "5" if args.quick else ("50" if chains == "100" else "10")
        runs.append((f"HMC, {chains} chains", ["bench_hmc.py", "--points", chains, "--trajectories", trajectories]))
    runs += ais_runs(args.quick, args.device)
    rows = []
    for label, cmd in runs:
        out = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:], "--threads", str(args.threads), "--device", args.device],
                             capture_output=True, text=True, check=True).stdout
        print(f"== {label}\n{out}", flush=True)
        rows.append(summarize(label, out, "--fresh-first-step" in cmd))
    print("| benchmark | ratios (this run) |\n| --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--run", help="a trained run folder (e.g. the README's main job): adds IWAE-5000 on its model and test images")
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda (every benchmark runs on it; the output names it)")
    main(p.parse_args())
