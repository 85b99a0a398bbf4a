"""AEVB Figure 4: learned 2-D latent manifolds of Frey Face and MNIST.

Trains Nz = 2 models and draws the decoder mean on a linearly spaced grid of the unit square mapped
through the inverse Gaussian CDF. Writes ``fig4_<dataset>.png`` (the manifold), ``fig4.csv`` (the
training curves) and ``fig4.md`` into ``--out``.

    python examples/fig4_manifolds.py --datasets mnist frey --budget 1e6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import experiments as X
from pyro_vae.cli import folder_arg, positive_float, positive_int
from pyro_vae.runs.plotting import plot_manifold

CONFIGS = {"mnist": "aevb_mnist", "frey": "aevb_frey"}


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows, table, stopped = [], [], {}
    for name in args.datasets:
        cfg = X.variant(CONFIGS[name], [f"name=fig4_{name}", "model.z_dim=2", "training.epochs=null",
                                        f"training.sample_budget={int(args.budget)}", f"seed={args.seed}", *args.set], args.data)
        trainer, stopped[cfg.name] = X.train(cfg, out / "runs" / cfg.name)
        picture = plot_manifold(trainer.vae.eval(), out / f"fig4_{name}.png", n=args.grid)
        metrics = X.read_metrics(out / "runs" / cfg.name)
        rows += [{"dataset": name, **m} for m in metrics]
        table.append({"dataset": name, "samples_seen": trainer.samples_seen, "test_elbo": float(metrics[-1]["test_elbo"]),
                      "test_elbo_stderr": float(metrics[-1]["test_elbo_stderr"]),
                      "picture": picture.name if picture else "(not an image data set)"})
        print(f"{name}: test ELBO {table[-1]['test_elbo']:.2f}; wrote {picture}")
    X.write_csv(rows, out / "fig4.csv")
    X.write_markdown(table, ["dataset", "samples_seen", "test_elbo", "test_elbo_stderr", "picture"], out / "fig4.md",
                     "Fig. 4: learned 2-D manifolds",
                     [f"Command: `{X.command_text(args, 'fig4_manifolds.py')}`", *X.stopped_notes(stopped)])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="*", default=["mnist", "frey"], choices=sorted(CONFIGS))
    p.add_argument("--budget", type=positive_float, default=1e6)
    p.add_argument("--grid", type=positive_int, default=20, help="points per side of the manifold grid")
    p.add_argument("--out", type=folder_arg, default="results/fig4")
    X.add_run_arguments(p)  # --seed, --data, --set, --device
    X.run_script(main, p)
