"""Wake-sleep on the paper's MNIST model (AEVB Sec. 5, Fig. 2): which of its choices matter.

Wake-sleep (Hinton, Dayan, Frey & Neal 1995) trains the decoder on ``z ~ q(z|x)`` (wake) and the
recognition model on dreams ``(z, x) ~ p(z) p(x|z)`` (sleep). Each variant below changes one choice
from the paper's setting (Adagrad 0.02, M = 100, one dream per datapoint), trains to ``--budget``
samples and is scored three ways on the first ``--n`` test points: the ELBO (what Fig. 2 plots), log
p(x) by IWAE-k (the model itself, whatever its recognition model), and the paired difference to
AEVB's log p(x) on the same points.

Variants:

* ``paper``: Adagrad 0.02, M dreams per step;
* ``lr0.01``: Adagrad 0.01 (the step size the paper's protocol picks for wake-sleep, ``fig2_lower_bound.py``);
* ``dreams10x``: 10 M dreams per step (a less noisy sleep gradient);
* ``annealed``: Adagrad 0.02 decayed exponentially to 0.002 at the budget (the paper's Fig. 3 anneals);
* ``full_normal``: another recognition model, a full-covariance Gaussian whose scales come through a
  softplus (the paper's outputs log sigma^2);
* ``rws``: reweighted wake-sleep, K = 5 (Bornschein & Bengio 2015);
* ``aevb``: AEVB with Adagrad 0.02, the reference.

The scale of the sleep term against the wake term is not a variant: the wake term's gradient
reaches only the decoder and the sleep term's only the encoder (tested), and Adagrad's update
``lr * g / sqrt(sum g^2)`` is the same for ``c * g`` at any c > 0, so a relative weight between the
phases changes nothing but the balance against the weight prior.

Each variant also runs for its first ``--early`` samples alone, and the table shows, after them, the
recognition model's mean standard deviation on the test points and on dreams (the prior's, which
fits dreams from an untrained decoder, is 1) and the fraction of ones in the dreams (the data's is
about 0.13). At the start the sleep gradient is noise around zero (q = p(z) already fits dreams
that do not depend on z), and Adagrad scales every coordinate's step to about the step size
whatever the gradient's size, so the first steps move the recognition model at random, coherently
over the hidden units that feed each output; where they carry q far from the prior, the wake phase
fits the decoder at latents the prior never draws, and the dreams stay noise.

    python examples/wake_sleep_study.py --budget 1e6
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List

import torch

import experiments as X
from pyro_vae import estimators
from pyro_vae.cli import folder_arg, positive_float, positive_int
from pyro_vae.config.build import dataset_from_config
from pyro_vae.errors import ConfigError
from pyro_vae.files import write_text_atomically
from pyro_vae.training.trainer import Trainer

VARIANTS: Dict[str, List[str]] = {
    "paper": ["objective.name=wake_sleep", "optimizer.lr=0.02"],
    "lr0.01": ["objective.name=wake_sleep", "optimizer.lr=0.01"],
    "dreams10x": ["objective.name=wake_sleep", "optimizer.lr=0.02", "objective.dream_batch_size=1000"],
    "annealed": ["objective.name=wake_sleep", "optimizer.lr=0.02", "optimizer.schedule.name=exponential"],
    "full_normal": ["objective.name=wake_sleep", "optimizer.lr=0.02", "model.guide.name=full_normal"],
    "rws": ["objective.name=rws", "objective.num_particles=5", "optimizer.lr=0.02"],
    "aevb": ["objective.name=trace_meanfield", "optimizer.lr=0.02"],
}


def annealing_rate(budget: int, n_train: int, factor: float = 0.1) -> float:
    """The per-epoch decay ``gamma`` that takes the step size to ``factor`` times itself at ``budget``
    samples (one decay per pass over ``n_train`` points)."""
    epochs = max(1, math.ceil(budget / n_train))
    return factor ** (1.0 / epochs)


def variant_config(args: argparse.Namespace, name: str, budget: int, suffix: str = ""):
    cfg = X.variant("aevb_mnist", [
        f"name=ws_study_{name}{suffix}", f"model.z_dim={args.z_dim}", "training.epochs=null",
        f"training.sample_budget={budget}", "training.eval_train_points=1000", f"seed={args.seed}",
        *VARIANTS[name], *args.set,
    ], args.data)
    if cfg.optimizer.schedule.name == "exponential":
        n_train = dataset_from_config(cfg.data).x_train.shape[0]
        cfg.optimizer.schedule = cfg.optimizer.schedule.model_copy(update={"gamma": annealing_rate(budget, n_train)})
    return cfg


@torch.no_grad()
def recognition_drift(trainer: Trainer, x: torch.Tensor, seed: int) -> Dict[str, float]:
    """The recognition model's mean standard deviation on ``x`` and on as many dreams from the model,
    and the fraction of ones in the dreams."""
    torch.manual_seed(seed)
    dreams, _ = trainer.vae.simulate(x.shape[0])
    on_data, on_dreams = trainer.vae.encode(x), trainer.vae.encode(dreams)
    return {"q_std": on_data.stddev.mean().item(), "q_std_dreams": on_dreams.stddev.mean().item(), "dream_ones": dreams.mean().item()}


def read_saved(path: Path) -> Dict:
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not the study's saved evaluation ({e}); delete it to evaluate that run again.") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} is not the study's saved evaluation (not a mapping); delete it to evaluate that run again.")
    return saved


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    budget, early = int(args.budget), int(args.early)
    rows, stopped = [], {}
    for name in args.variants:
        # the first samples alone: how far the recognition model drifts before the loop closes
        cfg = variant_config(args, name, early, suffix=f"_first{early}")
        trainer, _ = X.train(cfg, out / "runs" / cfg.name)
        x = trainer.x_test[: args.n]
        drift = recognition_drift(trainer, x, args.seed)

        cfg = variant_config(args, name, budget)
        run_dir = out / "runs" / cfg.name
        trainer, stopped[cfg.name] = X.train(cfg, run_dir)
        saved_path = run_dir / f"study_n{args.n}_k{args.k}.json"
        saved = read_saved(saved_path)
        if saved.get("samples_seen") != trainer.samples_seen:
            trainer.vae.eval()
            torch.manual_seed(args.seed)
            elbo = estimators.elbo(trainer.vae, x)
            torch.manual_seed(args.seed)
            iwae = estimators.iwae(trainer.vae, x, k=args.k)
            saved = {"samples_seen": trainer.samples_seen, "test_elbo": elbo.mean, "test_elbo_stderr": elbo.stderr,
                     "log_px": iwae.mean, "log_px_stderr": iwae.stderr, "per_datapoint": iwae.per_datapoint.tolist()}
            write_text_atomically(saved_path, json.dumps(saved))
        train_elbo = X.read_metrics(run_dir)[-1]["train_elbo"]
        rows.append({"variant": name, "lr": cfg.optimizer.lr, "q_std_early": drift["q_std"], "q_std_dreams_early": drift["q_std_dreams"],
                     "dream_ones_early": drift["dream_ones"],
                     "samples_seen": saved["samples_seen"], "train_elbo": float(train_elbo), "test_elbo": saved["test_elbo"],
                     "log_px": saved["log_px"], "log_px_stderr": saved["log_px_stderr"], "per_datapoint": saved["per_datapoint"]})
        print(f"{name:10s} after {early} samples q std {drift['q_std']:.2f}, dreams {drift['dream_ones']:.2f} ones; after "
              f"{saved['samples_seen']}: test ELBO {saved['test_elbo']:.2f}, log p(x) {saved['log_px']:.2f}")
    aevb = next((r for r in rows if r["variant"] == "aevb"), None)
    for r in rows:
        paired = aevb is not None and r is not aevb and r["samples_seen"] == aevb["samples_seen"]
        r["minus_aevb"] = X.paired_text(aevb["per_datapoint"], r["per_datapoint"]) if paired else ""
    table = [{k: v for k, v in r.items() if k != "per_datapoint"} for r in rows]
    X.write_csv(table, out / "wake_sleep_study.csv")
    X.write_markdown(table, ["variant", "lr", "q_std_early", "q_std_dreams_early", "dream_ones_early", "samples_seen", "train_elbo", "test_elbo", "log_px",
                             "log_px_stderr", "minus_aevb"], out / "wake_sleep_study.md",
                     f"Wake-sleep variants, MNIST, Nz = {args.z_dim}, {budget} training samples",
                     [f"q_std_early, q_std_dreams_early, dream_ones_early: after the first {early} samples, the recognition model's "
                      f"mean standard deviation on the first {args.n} test points and on {args.n} dreams (the prior's: 1), and the "
                      f"fraction of ones in the dreams (the data's: {x.mean().item():.2f}). test_elbo and log_px (IWAE-{args.k}) on the first {args.n} test points; minus_aevb: "
                      "log p(x) minus AEVB's on the same points, with the paired standard error. Command: "
                      f"`{X.command_text(args, 'wake_sleep_study.py')}`", *X.stopped_notes(stopped)])
    print(f"wrote {out / 'wake_sleep_study.md'}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=positive_float, default=1e6, help="training samples per variant")
    p.add_argument("--early", type=positive_float, default=2000, help="training samples of each variant's early look (default 2000)")
    p.add_argument("--z-dim", type=positive_int, default=20)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--n", type=positive_int, default=1000, help="test points scored")
    p.add_argument("--k", type=positive_int, default=1000, help="IWAE particles")
    p.add_argument("--out", type=folder_arg, default="results/wake_sleep_study")
    X.add_run_arguments(p)  # --seed, --data, --set, --device
    X.run_script(main, p)
