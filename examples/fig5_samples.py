"""AEVB Figure 5: random samples from generative models with Nz in {2, 5, 10, 20} (MNIST).

Writes ``fig5_z<Nz>.png`` (decoder means E[x|z], z ~ p(z)), ``fig5.csv`` and ``fig5.md`` into
``--out``.

    python examples/fig5_samples.py --budget 1e6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import experiments as X
from pyro_vae.cli import folder_arg, positive_float, positive_int
from pyro_vae.runs.plotting import plot_samples


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows, table, stopped = [], [], {}
    for z in args.z_dims:
        cfg = X.variant(args.config, [f"name=fig5_z{z}", f"model.z_dim={z}", "training.epochs=null",
                                      f"training.sample_budget={int(args.budget)}", f"seed={args.seed}", *args.set], args.data)
        trainer, stopped[cfg.name] = X.train(cfg, out / "runs" / cfg.name)
        torch.manual_seed(args.seed)
        picture = plot_samples(trainer.vae.eval(), out / f"fig5_z{z}.png", n=args.n, nrow=int(args.n**0.5))
        metrics = X.read_metrics(out / "runs" / cfg.name)
        rows += [{"z_dim": z, **m} for m in metrics]
        table.append({"z_dim": z, "samples_seen": trainer.samples_seen, "test_elbo": float(metrics[-1]["test_elbo"]),
                      "test_elbo_stderr": float(metrics[-1]["test_elbo_stderr"]),
                      "picture": picture.name if picture else "(not an image data set)"})
        print(f"Nz={z}: test ELBO {table[-1]['test_elbo']:.2f}; wrote {picture}")
    X.write_csv(rows, out / "fig5.csv")
    X.write_markdown(table, ["z_dim", "samples_seen", "test_elbo", "test_elbo_stderr", "picture"], out / "fig5.md",
                     "Fig. 5: random samples",
                     [f"Command: `{X.command_text(args, 'fig5_samples.py')}`", *X.stopped_notes(stopped)])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="aevb_mnist")
    p.add_argument("--z-dims", type=positive_int, nargs="*", default=[2, 5, 10, 20])
    p.add_argument("--budget", type=positive_float, default=1e6)
    p.add_argument("--n", type=positive_int, default=100, help="samples per picture")
    p.add_argument("--out", type=folder_arg, default="results/fig5")
    X.add_run_arguments(p)  # --seed, --data, --set, --device
    X.run_script(main, p)
