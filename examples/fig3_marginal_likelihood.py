"""AEVB Figure 3: estimated marginal log-likelihood against training samples seen, AEVB against
wake-sleep against Monte Carlo EM, with 100 hidden units, Nz = 3, and Ntrain in {1000, 50000}.

log p(x) is estimated on the first ``--eval-points`` (1000) training and test points, at
log-spaced points of training, with the paper's HMC estimator (Appendix D; 4 leapfrog steps) and
with IWAE-k. MCEM trains no encoder, so its IWAE numbers (which sample from that encoder) are loose
lower bounds; its HMC-estimator numbers are the comparable ones, as in the paper.
Writes ``fig3.csv``, ``fig3.png`` and ``fig3.md`` into ``--out``.

    python examples/fig3_marginal_likelihood.py --budget 1e6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyro_vae import estimators  # noqa: E402
import experiments as X  # noqa: E402
from pyro_vae.cli import folder_arg, positive_float, positive_int  # noqa: E402
from pyro_vae.data.datasets import binarize  # noqa: E402
from pyro_vae.mcmc.hmc import RHAT_THRESHOLD  # noqa: E402
from pyro_vae.errors import ConfigError  # noqa: E402
from pyro_vae.files import write_text_atomically  # noqa: E402
from pyro_vae.training.trainer import Trainer  # noqa: E402

METHODS = {"aevb": "trace_meanfield", "wake_sleep": "wake_sleep", "mcem": "mcem"}


def read_saved_rows(path: Path) -> list:
    """The evaluations an earlier invocation saved beside a run's checkpoint (none if it has none)."""
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())
        rows_ok = isinstance(rows, list) and all(isinstance(r, dict) and "samples_seen" in r for r in rows)
        problem = None if rows_ok else "not a list of rows"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problem = str(e)
    if problem:
        raise ConfigError(f"{path} does not hold Figure 3's saved evaluations ({problem}); delete it to go on (its "
                          "evaluations are lost: the run is evaluated again from where it stands), or choose another --out.")
    return rows


def minus_aevb(row: dict, aevb: dict | None) -> str:
    """``row``'s log p(x) minus AEVB's on the same points and budget, ``+1.23 +- 0.04`` (paired), or
    empty where there is nothing to pair (AEVB's own row, a budget AEVB did not reach, rows saved
    by an older version without per-point values)."""
    if aevb is None or row is aevb or row["samples_seen"] != aevb["samples_seen"]:
        return ""
    return X.paired_text(aevb.get("per_datapoint"), row.get("per_datapoint"))


def minus_iwae(row: dict, rows: list) -> str:
    """An HMC row's log p(x) minus the IWAE bound's on the same points and budget (paired), or empty.
    IWAE-k is a stochastic lower bound on log p(x): an App. D estimate clearly below it is wrong (its
    chains did not explore the posterior), whatever its own standard error says."""
    if row["estimator"] != "hmc":
        return ""
    key = (row["n_train"], row["method"], row["split"], row["samples_seen"])
    iwae = next((r for r in rows if r["estimator"] == "iwae" and (r["n_train"], r["method"], r["split"], r["samples_seen"]) == key), None)
    return X.paired_text((iwae or {}).get("per_datapoint"), row.get("per_datapoint"))


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows, stopped, step_notes = [], {}, []
    for n_train in args.n_train:
        for method in args.methods:
            cfg = X.variant("aevb_mnist", [
                f"name=fig3_n{n_train}_{method}", "model.z_dim=3", "model.encoder.hidden=[100]", "model.decoder.hidden=[100]",
                f"objective.name={METHODS[method]}", f"data.n_train={n_train}", "training.epochs=null",
                f"training.sample_budget={int(args.budget)}", f"seed={args.seed}", *args.set,
            ], args.data)
            if args.step_sizes:
                lr, scores = X.choose_step_size(cfg, out / "runs", args.step_sizes, int(args.pilot_budget))
                cfg.optimizer = cfg.optimizer.model_copy(update={"lr": lr})
                step_notes.append(X.step_size_note(method, f"3, Ntrain = {n_train}", lr, scores, int(args.pilot_budget)))
                print(step_notes[-1])
            run_dir = out / "runs" / cfg.name
            trainer = Trainer(cfg, run_dir, progress=False)
            # Evaluations are kept beside the checkpoint, so a resumed or repeated run keeps them.
            saved = run_dir / "fig3_rows.json"
            run_rows = read_saved_rows(saved)
            x_train = trainer.x_train[: args.eval_points]
            if cfg.data.binarize == "dynamic":  # score one fixed binarization of the training points
                x_train = binarize(x_train, cfg.data.binarize_seed)
            done = max((r["samples_seen"] for r in run_rows), default=0)
            pending = [p for p in X.log_points(int(args.budget), first=min(n_train, int(args.budget)), per_decade=args.per_decade) if p > done]

            def evaluate(trainer, row, method=method, n_train=n_train, pending=pending, x_train=x_train, run_rows=run_rows, saved=saved):
                if not pending or (row["samples_seen"] < pending[0] and not trainer.finished):
                    return
                while pending and pending[0] <= row["samples_seen"]:
                    pending.pop(0)
                trainer.vae.eval()
                for split, x in (("train", x_train), ("test", trainer.x_test[: args.eval_points])):
                    torch.manual_seed(args.seed)
                    for name, est in (
                        ("hmc", estimators.hmc_marginal_likelihood(trainer.vae, x, num_samples=args.hmc_samples, num_leapfrog=4)),
                        ("iwae", estimators.iwae(trainer.vae, x, k=args.k)),
                    ):
                        run_rows.append({"n_train": n_train, "method": method, "samples_seen": row["samples_seen"], "split": split,
                                         "estimator": name, "log_px": est.mean, "stderr": est.stderr,
                                         # HMC: the points whose chains disagree (R-hat), where App. D may come out low
                                         "rhat_above": est.diagnostics.get("datapoints_rhat_above", ""),
                                         # every point's log p(x), for the table's paired differences between methods
                                         "per_datapoint": est.per_datapoint.tolist()})
                trainer.vae.train()
                write_text_atomically(saved, json.dumps(run_rows))  # a crash mid-write must not break the resume
                print(f"N={n_train} {method:10s} {row['samples_seen']:>9d} samples: test log p(x) (HMC) {run_rows[-2]['log_px']:.2f}")

            stopped[cfg.name] = X.train_to_end(trainer, on_epoch_end=evaluate)
            rows += run_rows
    X.write_csv([{k: v for k, v in r.items() if k != "per_datapoint"} for r in rows], out / "fig3.csv")

    fig, axes = plt.subplots(len(args.n_train), 2, figsize=(9, 3.3 * len(args.n_train)), squeeze=False)
    for i, n_train in enumerate(args.n_train):
        for j, split in enumerate(("train", "test")):
            ax = axes[i][j]
            for method, colour in zip(args.methods, ("C0", "C3", "C2")):
                for est, style in (("hmc", "-o"), ("iwae", ":")):
                    pts = [r for r in rows if (r["n_train"], r["method"], r["split"], r["estimator"]) == (n_train, method, split, est)]
                    if pts:
                        ax.plot([r["samples_seen"] for r in pts], [r["log_px"] for r in pts], style, color=colour, ms=3,
                                label=f"{method} ({est})")
            ax.set_xscale("log")
            ax.set_title(f"Ntrain = {n_train}, {split}")
            ax.set_xlabel("training samples evaluated")
            ax.set_ylabel("log p(x) per datapoint")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fig3.png", dpi=110)
    plt.close(fig)
    last = {}
    for r in rows:
        last[(r["n_train"], r["method"], r["split"], r["estimator"])] = r
    table = [dict(r, minus_aevb=minus_aevb(r, last.get((r["n_train"], "aevb", r["split"], r["estimator"]))), minus_iwae=minus_iwae(r, rows))
             for r in last.values()]
    X.write_markdown(table, ["n_train", "method", "split", "estimator", "samples_seen", "log_px", "stderr", "minus_aevb", "rhat_above",
                             "minus_iwae"],
                     out / "fig3.md", f"Fig. 3: log p(x) after {int(args.budget)} training samples",
                     [f"Nz=3, 100 hidden; first {args.eval_points} train/test points; HMC = AEVB App. D ({args.hmc_samples} samples, "
                      f"4 leapfrog steps), IWAE k={args.k}; binarize={cfg.data.binarize}. minus_aevb: the method's log p(x) minus "
                      "AEVB's at the same budget on the same points, the mean of the per-point differences with its paired standard "
                      "error (the points' own spread, most of each stderr, cancels). rhat_above: of the HMC rows' points, those "
                      f"whose chains disagree (R-hat > {RHAT_THRESHOLD:g} in some latent dimension); there the estimate may come out "
                      "low. minus_iwae: an HMC row's log p(x) minus IWAE's on the same points (paired); IWAE is a stochastic "
                      "lower bound, so a value clearly below zero means the HMC estimate is wrong there. Command: "
                      f"`{X.command_text(args, 'fig3_marginal_likelihood.py')}`",
                      *step_notes, *X.stopped_notes(stopped)])
    print(f"wrote {out}/fig3.csv, .png, .md")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=positive_float, default=1e6, help="training samples per run (the paper: up to 1e8)")
    p.add_argument("--n-train", type=positive_int, nargs="*", default=[1000, 50000])
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--eval-points", type=positive_int, default=1000)
    p.add_argument("--per-decade", type=positive_int, default=3, help="evaluations per decade of training samples")
    p.add_argument("--hmc-samples", type=positive_int, default=50)
    p.add_argument("--k", type=positive_int, default=1000, help="IWAE particles")
    p.add_argument("--out", type=folder_arg, default="results/fig3")
    X.add_step_size_arguments(p)  # --step-sizes, --pilot-budget
    X.add_run_arguments(p)  # --seed, --data, --set, --device
    X.run_script(main, p)
