"""The ``pyro-vae`` command line: train, evaluate, sample, plot, show, data fetch."""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import signal
import sys
import typing
from pathlib import Path
from typing import List, Optional

from pyro_vae.errors import ConfigError, PyroVAEError, one_line_warnings
from pyro_vae.files import folder_path, prepared_output
from pyro_vae.user_numbers import SEEDS_BELOW, parse_whole_number


def _whole_number(text: str, minimum: int) -> int:
    value = parse_whole_number(text)  # 5000, 5e3 or 5000.0
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
    return value


def seed_arg(text: str) -> int:
    """argparse type: a seed, a whole number from 0 to 2**63 - 1 (torch's seeds are 64-bit)."""
    value = _whole_number(text, 0)
    if value >= SEEDS_BELOW:
        raise argparse.ArgumentTypeError(f"expected a whole number below 2**63, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (warmup steps)."""
    return _whole_number(text, 0)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a count of points, particles, steps or draws)."""
    return _whole_number(text, 1)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a memory cap in GiB, a training budget)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def device_arg(text: str) -> str:
    """argparse type: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether a GPU is there is checked
    when the device is resolved, with its own message)."""
    from pyro_vae.config import is_device_name

    name = text.strip()
    if is_device_name(name):
        return name
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def folder_arg(text: str) -> Path:
    """argparse type: a folder that exists or can be created (no file in the way)."""
    try:
        return folder_path(text, "folder")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_train(args: argparse.Namespace) -> int:
    from pyro_vae.config import load
    from pyro_vae.training.trainer import Trainer

    if args.allow_changes and not args.resume:
        raise ConfigError("--allow-changes applies to a resumed run only; add --resume.")
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"device={args.device}")
    if args.tensorboard:
        overrides.append(f"logging.tensorboard={json.dumps(args.tensorboard)}")
    config = load(args.config, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else (Path(args.config) if Path(args.config).is_dir() else Path("runs") / config.name)
    trainer = Trainer(config, run_dir, progress=not args.no_progress, epoch_lines=True)
    if args.evaluate and config.evaluation.estimator == "exact":
        from pyro_vae.runs.evaluate import check_exact_applies

        check_exact_applies(trainer.vae)  # before training, not after it
    rows = trainer.train(resume=args.resume, allow_changes=args.allow_changes)
    last = rows[-1] if rows else None
    if _is_main():
        print(f"run folder: {run_dir}")
    if not last and _is_main():  # each trained epoch printed its own line
        print(f"nothing to train: the run is at epoch {trainer.epoch} ({trainer.samples_seen} samples), {trainer.stop_reason()}; "
              "raise training.epochs or training.sample_budget (--set) to continue it")
    if args.evaluate:
        from pyro_vae.estimators.options import SETTINGS_USED
        from pyro_vae.runs.evaluate import evaluate_run

        ev = config.evaluation  # scores the model just trained, as loading it from the folder would
        settings = {name: getattr(ev, name) for name in SETTINGS_USED[ev.estimator]}
        result = evaluate_run(trainer.trained_run(), ev.estimator, ev.split, ev.n, config.seed, progress=not args.no_progress, **settings)
        _print_result(result)
    return 0


def _is_main() -> bool:
    from pyro_vae.distributed import from_env

    return from_env().is_main


def _print_result(result: dict) -> None:
    if not _is_main():
        return
    if result["estimator"] == "bdmc":
        settings = ", ".join(f"{k}={v}" for k, v in result["settings"].items() if k != "points")
        lower, upper = result["lower"], result["upper"]
        print(f"bdmc on {result['n']} points simulated from the model: AIS (lower) {lower['value']:.3f} +- {lower['stderr']:.3f}, "
              f"reverse AIS (upper) {upper['value']:.3f} +- {upper['stderr']:.3f}; gap mean {result['gap_mean']:.3f} +- {result['gap_stderr']:.3f}, "
              f"max {result['gap_max']:.3f} nats [{settings}] -> {result['path']}")
        return
    if result["estimator"] == "gaps":
        gaps = ", ".join(f"{k} {v:.3f} +- {result['summary_stderr'][k]:.3f}" for k, v in result["summary"].items())
        print(f"gaps on {result['split']} (n={result['n']}; log p(x) from {result['settings']['log_px_from']}): {gaps} nats -> {result['path']}")
        _print_active_units(result["estimates"]["iwae"])
        return
    settings = ", ".join(f"{k}={v}" for k, v in result["settings"].items())
    print(
        f"{result['estimator']} on {result['split']} (n={result['n']}, binarize={result['data'].get('binarize')}): "
        f"log p(x) = {result['value']:.3f} +- {result['stderr']:.3f} nats [{settings}] -> {result['path']}"
    )
    _print_active_units(result)
    _print_chain_agreement(result)


def _print_chain_agreement(estimate: dict) -> None:
    """For the App. D estimator: how many datapoints' HMC chains disagree (R-hat), since its
    Gaussian fit, and so its estimate, rests on chains that have mixed."""
    diagnostics = estimate.get("diagnostics", {})
    if "datapoints_rhat_above" not in diagnostics:
        return
    above, threshold = diagnostics["datapoints_rhat_above"], diagnostics["rhat_threshold"]
    draws = estimate["settings"]["num_samples"] * estimate["settings"]["num_chains"]
    line = (f"HMC chains: R-hat > {threshold:g} in some latent dimension at {above} of {estimate['n']} datapoints "
            f"(largest {diagnostics['rhat_max']:.2f}); bulk ESS from {diagnostics['ess_bulk_min']:.1f} of {draws} draws a datapoint")
    if above:
        line += (". Chains that disagree (a posterior with several modes, or chains not yet mixed) can leave out part of "
                 "the posterior, and App. D's estimate then comes out low there; more --hmc-chains, --hmc-warmup or "
                 "--hmc-samples show how far")
    print(line)


def _print_active_units(estimate: dict) -> None:
    units = estimate.get("diagnostics", {}).get("active_units")
    if units:
        print(f"active units: {units['active_units']} of {units['num_latents']} (Cov_x E_q[z_u] > {units['threshold']:g}, "
              f"Burda et al. 2015)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pyro_vae.runs.evaluate import evaluate_run

    from pyro_vae.estimators.options import EstimatorOptions

    settings = {name: getattr(args, name) for name in EstimatorOptions.model_fields}
    result = evaluate_run(args.run, args.estimator, args.split, args.n, args.seed, args.device, progress=not args.no_progress,
                          out=args.out, save_chains=args.save_chains, **settings)
    _print_result(result)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from pyro_vae.runs.plotting import MAX_PICTURE_SAMPLES, is_image, picture_formats, plot_samples
    from pyro_vae.runs.samples import write_sample_means
    from pyro_vae.runs.load import load_run

    out = prepared_output(args.out, "--out") if args.out else Path(args.run) / "samples.png"
    image_formats = picture_formats()
    if out.suffix.lower() != ".npy" and out.suffix.lower().lstrip(".") not in image_formats:
        raise ConfigError(f"--out {out}: give a .npy file (the sample means as an array) or a picture "
                          f"({', '.join('.' + f for f in image_formats)}).")
    as_array = out.suffix.lower() == ".npy"
    trained = load_run(args.run, device=args.device)
    if not as_array and not is_image(trained.vae):
        out, as_array = out.with_suffix(".npy"), True
        if args.out:
            out = prepared_output(out, "--out (as an array: the data are not images)")
        print("the data are not images: the samples are saved as an array", file=sys.stderr)
    if not as_array and args.n > MAX_PICTURE_SAMPLES:
        raise ConfigError(f"--n {args.n}: a picture shows at most {MAX_PICTURE_SAMPLES} samples (a 50 x 50 grid); "
                          f"for more, write them as an array with --out {out.with_suffix('.npy')}.")
    torch.manual_seed(args.seed)
    if as_array:
        write_sample_means(trained.vae, out, args.n)
    else:
        plot_samples(trained.vae, out, n=args.n, nrow=int(args.n**0.5) or 1)
    print(f"wrote {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pyro_vae.runs.plotting import plot_run
    import torch

    from pyro_vae.runs.load import load_run

    trained = load_run(args.run, device=args.device)
    folder_path(Path(args.run) / "plots", "the plots folder", "move or rename that file (plot writes its pictures there)")
    torch.manual_seed(trained.config.seed)  # the samples drawn in the pictures
    written, skipped = plot_run(Path(args.run), trained.vae, trained.x_test, trained.data.y_test)
    for p in written:
        print(f"wrote {p}")
    for name, why in skipped.items():
        print(f"no {name}: {why}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from pyro_vae.runs.records import CONFIG_NAME
    from pyro_vae.runs.summary import run_summary

    runs: List[Path] = []
    for given in map(Path, args.runs):  # a folder of run folders (`pyro-vae show runs`) stands for the runs it holds
        holds_runs = given.is_dir() and not (given / CONFIG_NAME).exists()
        held = sorted(p for p in given.iterdir() if (p / CONFIG_NAME).is_file()) if holds_runs else []
        runs.extend(held or [given])
    code = 0
    for i, run in enumerate(runs):  # `pyro-vae show runs/*`: each run, a blank line between
        try:
            print(("\n" if i else "") + run_summary(run))
        except PyroVAEError as e:
            print(f"pyro-vae: error: {e}", file=sys.stderr)
            code = 2
    return code


def cmd_compare(args: argparse.Namespace) -> int:
    from pyro_vae.runs.compare import compare, comparison_text

    print(comparison_text(compare(args.a, args.b)))
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from pyro_vae.config import SHIPPED_CONFIGS, shipped_configs

    configs = shipped_configs()
    width = max(map(len, configs))
    for name, description in configs.items():
        print(f"{name:<{width}}  {description}")
    print(f"(in {SHIPPED_CONFIGS}; `pyro-vae train NAME` runs one, a copy of its file is yours to edit)")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from pyro_vae.data.datasets import load_dataset

    data = load_dataset(args.name, root=args.root, download=True)
    print(f"{args.name}: {data.x_train.shape[0]} train / {data.x_test.shape[0]} test points of shape {data.x_shape}; {data.info.get('source', '')}")
    return 0


def _bounded(as_type: typing.Callable[[str], int], most: int) -> typing.Callable[[str], int]:
    """argparse type: ``as_type`` with an upper bound."""

    def parse(text: str) -> int:
        value = as_type(text)
        if value > most:
            raise argparse.ArgumentTypeError(f"expected at most {most}, got {text!r}")
        return value

    return parse


def _add_estimator_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per estimator setting (``--k``, ``--ais-steps``, ...), with the type, bounds,
    default and help that :class:`~pyro_vae.estimators.options.EstimatorOptions` declares."""
    from pyro_vae.estimators.options import DEFAULTS, EstimatorOptions, describe_setting

    for name, field in EstimatorOptions.model_fields.items():
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else ()
        kind = describe_setting(name)
        if choices:
            as_type = None
        elif kind.endswith(">= 0"):
            as_type = nonnegative_int
        elif kind.startswith("a whole number"):
            as_type = positive_int
        else:
            as_type = positive_float
        default = getattr(DEFAULTS, name)
        most = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
        if as_type is not None and most is not None:
            as_type = _bounded(as_type, most)
        parser.add_argument(f"--{name.replace('_', '-')}", type=as_type, choices=choices or None, default=default,
                            help=field.description + ("" if default is None else f" (default {default})"))


class _VersionAction(argparse.Action):
    """``--version``: pyro-vae's version and the torch and Pyro it runs on (what a run.json records)."""

    def __init__(self, option_strings: List[str], dest: str, **kwargs: typing.Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions of pyro-vae, torch and Pyro and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: typing.Any) -> None:
        from pyro_vae.hardware import versions

        found = versions()
        print(f"pyro-vae {found['pyro_vae']} (torch {found['torch']}, pyro-ppl {found['pyro']})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from pyro_vae.estimators.options import ESTIMATORS

    p = argparse.ArgumentParser(prog="pyro-vae", description="Variational autoencoders in Pyro (AEVB) with honest log p(x).")
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a config file")
    t.add_argument("config", help="a shipped config's name (pyro-vae configs lists them), a config file (.yaml/.toml), or a run folder to resume")
    t.add_argument("--run-dir", help="output folder (default runs/<config name>)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. --set model.z_dim=2")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    t.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue even though the data, model, objective, optimizer, batch size or seed "
                        "differ from the checkpoint's (recorded in run.json)")
    t.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:N or auto (overrides the config)")
    t.add_argument("--evaluate", action="store_true", help="after training, estimate log p(x) as the config's evaluation section says")
    t.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard event files into DIR (as logging.tensorboard: DIR)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch is still printed)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="estimate log p(x) of a trained run")
    e.add_argument("run", help="run folder")
    e.add_argument("--estimator", default="iwae", choices=ESTIMATORS,
                   help="gaps: ELBO, IWAE-k and AIS per datapoint with the amortization gap; bdmc: forward and reverse "
                        "AIS on --n points simulated from the model (default 100), bracketing log p(x): how far AIS "
                        "with these --ais-steps and --ais-chains can be trusted; exact: closed form, for linear-Gaussian models")
    e.add_argument("--split", default="test", choices=["test", "train"], help="the data split to score (default test; bdmc scores simulated points instead)")
    e.add_argument("--n", type=positive_int, help="evaluate the first n points only (bdmc: how many to simulate, default 100)")
    e.add_argument("--seed", type=seed_arg, default=0, help="seeds the estimator's draws (default 0; another seed is written to its own file)")
    e.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:N or auto (default: the run's config)")
    _add_estimator_flags(e)
    e.add_argument("--out", help="JSON output path, a new file (default: in RUN, named by the estimator, its settings, the split "
                   "and any --n or --seed: eval_iwae_k5000_test.json, eval_ais_steps1000_chains16_test_n100.json)")
    e.add_argument("--save-chains", metavar="FILE.nc", help="hmc or ais: the Markov chains behind the estimate as ArviZ "
                   "InferenceData (posterior and sample_stats), for az.summary and az.plot_trace; a new file")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("sample", help="draw samples from a trained model (PNG grid)")
    s.add_argument("run")
    s.add_argument("--n", type=positive_int, default=64, help="number of samples (default 64; a picture shows at most 2500, a .npy any number)")
    s.add_argument("--seed", type=seed_arg, default=0, help="seeds the draws (default 0)")
    s.add_argument("--out", help="a new picture (.png, default RUN/samples.png) or a new .npy array of the sample means")
    s.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:N or auto (default: the run's config)")
    s.set_defaults(fn=cmd_sample)

    pl = sub.add_parser("plot", help="write PNGs: ELBO curves, samples, reconstructions, manifold, latents")
    pl.add_argument("run")
    pl.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:N or auto (default: the run's config)")
    pl.set_defaults(fn=cmd_plot)

    sh = sub.add_parser("show", help="what run folders hold: model, training so far, every log p(x) estimate beside it")
    sh.add_argument("runs", nargs="+", metavar="run", help="one or more run folders, or a folder of them (runs)")
    sh.set_defaults(fn=cmd_show)

    c = sub.add_parser("compare", help="two log p(x) estimates of the same points: B - A with its paired standard error")
    c.add_argument("a", metavar="A", help="an evaluation's JSON (eval_*.json in a run folder)")
    c.add_argument("b", metavar="B", help="another evaluation's JSON, of the same split and points")
    c.set_defaults(fn=cmd_compare)

    cf = sub.add_parser("configs", help="list the configs that ship with pyro-vae (train takes their names)")
    cf.set_defaults(fn=cmd_configs)

    d = sub.add_parser("data", help="data sets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="download and cache a data set")
    f.add_argument("name", choices=["mnist", "fashion-mnist", "frey-face"], help="the data sets that are downloaded (synthetic is generated, npz read from your file)")
    f.add_argument("--root", help="data folder (default $PYRO_VAE_DATA or ~/.cache/pyro_vae)")
    f.set_defaults(fn=cmd_data_fetch)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command that ``args`` ran: ``pyro-vae data fetch`` -> ``fetch``'s."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _command_parser(action.choices[chosen], args)
    return parser


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse like argparse, but name an unknown flag in its command's usage, with the nearest
    flags that command has: ``pyro-vae evaluate --num-steps 5`` suggests ``--ais-steps``."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = _command_parser(parser, args)
        flags = [f for action in command._actions for f in action.option_strings]
        given = [u.split("=")[0] for u in unknown if u.startswith("--")]
        near: List[str] = []
        if "--set" in flags:  # `train --epochs 3`: a config setting, given with --set
            from pyro_vae.config.schema import settings_named

            near = [f"--set {path}=..." for path in settings_named({g[2:].replace("-", "_") for g in given})]
        elif "--set" in given:  # `evaluate RUN --set evaluation.k=100`: this command's settings are flags
            settings = [u.partition("=") for u in unknown if "=" in u and not u.startswith("-")]
            near = [f"--{key.rpartition('.')[2].replace('_', '-')} {value}" for key, _, value in settings]
            near = [n for n in near if n.split()[0] in flags]
        near = near or [m for g in given for m in difflib.get_close_matches(g, flags, n=2, cutoff=0.7) if g != "--set"]
        hint = f"did you mean {' or '.join(dict.fromkeys(near))}? " if near else ""
        if "--set" in given and "--set" not in flags:
            hint += "--set is train's: this command takes its settings as flags; "
        command.error(f"unrecognized arguments: {' '.join(unknown)}; {hint}`{command.prog} --help` lists the options")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    one_line_warnings()  # this process is ours (the command), not a library user's
    try:
        from pyro_vae.speed import allocator
        from pyro_vae.speed import fused_linear
        from pyro_vae.mcmc import potentials

        # environment settings are checked before any work
        fused_linear.switched_on()
        potentials.switched_on()
        allocator.switched_on()
        allocator.keep_freed_memory()  # this process is ours: steady CPU speed (see allocator.py)
        # A termination signal (a scheduler's time limit, `kill`) unwinds like Ctrl-C, so that
        # temporary files are removed and the last checkpoint is named.
        signal.signal(signal.SIGTERM, _interrupt)
        code = args.fn(args)
        from pyro_vae.distributed import from_env, shutdown

        shutdown(from_env())  # torchrun jobs: leave the process group together
        return code
    except PyroVAEError as e:
        print(f"pyro-vae: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        from pyro_vae.files import WRITE_FAILURES

        where = f" ({e.filename})" if e.filename else ""
        if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):  # a file and a folder where the other belongs
            path = e.filename2 or e.filename  # a rename's destination
            what = ("is a folder where pyro-vae writes a file" if e.errno == errno.EISDIR else
                    "or a folder above it, is a file where pyro-vae needs a folder")
            print(f"pyro-vae: error: {path}{',' if e.errno != errno.EISDIR else ''} {what}; move or rename it, or choose another "
                  "folder (--run-dir, --out, data.root).", file=sys.stderr)
            return 2
        if e.errno not in WRITE_FAILURES:
            raise
        print(f"pyro-vae: error: cannot write{where}: {WRITE_FAILURES[e.errno]}. Free space or choose a folder you can "
              "write (--run-dir, --out, data.root); finished work (checkpoints, results) is kept.", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not isinstance(e, MemoryError) and "memory" not in str(e).lower():
            raise
        print(f"pyro-vae: error: out of memory ({_one_line(e)[:160]}). A size in the config or a flag asks for more than "
              "this machine holds: lower model.z_dim, the networks' hidden sizes, data.n_train, --n or --memory-gb.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "train":
            print("interrupted; the last checkpoint is kept (continue with --resume)", file=sys.stderr)
        elif args.command == "evaluate":
            print("interrupted; no estimate was written (one is saved only when complete)", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
