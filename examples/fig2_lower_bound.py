"""AEVB Figure 2: the variational lower bound (train and test) against training samples seen,
AEVB against wake-sleep, for several latent sizes.

MNIST: 500 tanh hidden units, Nz in {3, 5, 10, 20, 200}; Frey Face: 200 hidden, Nz in {2, 5, 10,
20}; the paper's optimizer (Adagrad 0.02) and batch size (100). The paper trains to 1e8 samples;
``--budget`` sets how far (1e6 runs in minutes on a CPU). Writes ``fig2_<dataset>.csv``, ``.png``
and ``.md`` into ``--out``; the train bound is the ELBO on the first 1000 training points.

    python examples/fig2_lower_bound.py --dataset mnist --budget 1e6
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import experiments as X  # noqa: E402
from pyro_vae.cli import folder_arg, positive_float, positive_int  # noqa: E402

SETTINGS = {
    "mnist": ("aevb_mnist", [3, 5, 10, 20, 200]),
    "frey": ("aevb_frey", [2, 5, 10, 20]),
}
METHODS = {"aevb": "trace_meanfield", "wake_sleep": "wake_sleep"}
# The paper's test lower bounds where its MNIST curves end (read off its Fig. 2, about +-1 nat), marked
# on the figure as open circles at PAPER_SAMPLES.
PAPER_SAMPLES = 2.5e8
PAPER_FIG2 = {"mnist": {("aevb", 3): -134.0, ("wake_sleep", 3): -139.0, ("aevb", 5): -119.0, ("wake_sleep", 5): -121.5,
                        ("aevb", 10): -103.6, ("wake_sleep", 10): -106.5, ("aevb", 20): -99.7, ("wake_sleep", 20): -104.0,
                        ("aevb", 200): -99.7, ("wake_sleep", 200): -103.8}}


def main(args: argparse.Namespace) -> None:
    base, default_z = SETTINGS[args.dataset]
    z_dims = args.z_dims or default_z
    out = Path(args.out)
    rows, stopped, step_notes = [], {}, []
    for z in z_dims:
        for method in args.methods:
            cfg = X.variant(base, [
                f"name=fig2_{args.dataset}_{method}_z{z}", f"model.z_dim={z}", f"objective.name={METHODS[method]}",
                "training.epochs=null", f"training.sample_budget={int(args.budget)}", "training.eval_train_points=1000",
                f"seed={args.seed}", *args.set,
            ], args.data)
            if args.step_sizes:
                lr, scores = X.choose_step_size(cfg, out / "runs", args.step_sizes, int(args.pilot_budget))
                cfg.optimizer = cfg.optimizer.model_copy(update={"lr": lr})
                step_notes.append(X.step_size_note(method, z, lr, scores, int(args.pilot_budget)))
                print(step_notes[-1])
            run_dir = out / "runs" / cfg.name
            trainer, stopped[cfg.name] = X.train(cfg, run_dir)
            for r in X.read_metrics(run_dir):
                rows.append({"dataset": args.dataset, "method": method, "z_dim": z, "samples_seen": int(r["samples_seen"]),
                             "train_elbo": float(r["train_elbo"]), "test_elbo": float(r["test_elbo"]),
                             "test_elbo_stderr": float(r["test_elbo_stderr"])})
            print(f"{method:10s} Nz={z:3d}: test ELBO {rows[-1]['test_elbo']:.2f} after {trainer.samples_seen} samples")
    stem = out / f"fig2_{args.dataset}"
    X.write_csv(rows, stem.with_suffix(".csv"))

    fig, axes = plt.subplots(1, len(z_dims), figsize=(3.2 * len(z_dims), 3.2), squeeze=False)
    for ax, z in zip(axes[0], z_dims):
        for method, colour in zip(args.methods, ("C0", "C3")):
            pts = [r for r in rows if r["z_dim"] == z and r["method"] == method]
            ax.plot([r["samples_seen"] for r in pts], [r["train_elbo"] for r in pts], "--", color=colour, label=f"{method} train")
            ax.plot([r["samples_seen"] for r in pts], [r["test_elbo"] for r in pts], "-", color=colour, label=f"{method} test")
            # +- 2 standard errors of the test ELBO over the test points (one draw of z each)
            banded = [r for r in pts if math.isfinite(r["test_elbo_stderr"])]
            ax.fill_between([r["samples_seen"] for r in banded], [r["test_elbo"] - 2 * r["test_elbo_stderr"] for r in banded],
                            [r["test_elbo"] + 2 * r["test_elbo_stderr"] for r in banded], color=colour, alpha=0.2, linewidth=0)
            paper = PAPER_FIG2.get(args.dataset, {}).get((method, z))
            if paper is not None:  # where the paper's curve ends, at about 2.5e8 samples
                ax.plot([PAPER_SAMPLES], [paper], "o", color=colour, markerfacecolor="none", label=f"{method}, paper")
        ax.set_xscale("log")
        ax.set_title(f"{args.dataset}, Nz = {z}")
        ax.set_xlabel("training samples evaluated")
    axes[0][0].set_ylabel("lower bound per datapoint (nats)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)

    final = [r for r in rows if r["samples_seen"] == max(x["samples_seen"] for x in rows if x["method"] == r["method"] and x["z_dim"] == r["z_dim"])]
    cfg_data = trainer.config.data
    X.write_markdown(final, ["method", "z_dim", "samples_seen", "train_elbo", "test_elbo", "test_elbo_stderr"], stem.with_suffix(".md"),
                     f"Fig. 2 ({args.dataset}): lower bound after {int(args.budget)} training samples",
                     [f"Data: {cfg_data.name}, binarize={cfg_data.binarize}; train bound on the first 1000 training points; "
                      f"command: `{X.command_text(args, 'fig2_lower_bound.py', f'--dataset {args.dataset}')}`",
                      *step_notes, *X.stopped_notes(stopped)])
    print(f"wrote {stem}.csv, .png, .md")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(SETTINGS), default="mnist")
    p.add_argument("--budget", type=positive_float, default=1e6, help="training samples per run (the paper: up to 1e8)")
    p.add_argument("--z-dims", type=positive_int, nargs="*", help="latent sizes (default: the paper's)")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", type=folder_arg, default="results/fig2")
    X.add_step_size_arguments(p)  # --step-sizes, --pilot-budget
    X.add_run_arguments(p)  # --seed, --data, --set, --device
    X.run_script(main, p)
