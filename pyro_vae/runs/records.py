"""A run folder's records: ``metrics.csv`` (one row per epoch), ``run.json`` (versions, hardware,
data fingerprints) and the checks that a folder still describes what was trained in it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from pyro_vae.config import changed_settings, from_dict as config_from_dict
from pyro_vae import __version__
from pyro_vae.errors import CheckpointError, ConfigError

RUN_RECORD_NAME = "run.json"
METRICS_NAME = "metrics.csv"
METRIC_FIELDS = ["epoch", "step", "samples_seen", "train_objective", "train_elbo", "test_elbo", "test_elbo_stderr", "lr",
                 "epoch_seconds", "wall_seconds"]


CONFIG_NAME = "config.yaml"
# what a new run writes in its folder at the start (checkpoint.pt comes later and is checked apart)
STARTING_FILES = (CONFIG_NAME, RUN_RECORD_NAME, METRICS_NAME)


def is_run_record(path: Path | str) -> bool:
    """Whether ``path`` is a run.json that pyro-vae wrote (a JSON object naming its version)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and "pyro_vae" in record


def check_new_run_folder(run_dir: Path) -> None:
    """Raise a ConfigError if a new run in ``run_dir`` would replace files that are not a pyro-vae
    run's: config.yaml, run.json or metrics.csv in a folder without a run.json of pyro-vae's (a
    user's config kept in the folder it names as --run-dir, say). A folder of an earlier run that
    stopped before its first checkpoint is pyro-vae's, and starts afresh."""
    present = [name for name in STARTING_FILES if (run_dir / name).exists()]
    if present and not is_run_record(run_dir / RUN_RECORD_NAME):
        raise ConfigError(f"--run-dir {run_dir} holds {', '.join(present)} that no pyro-vae run wrote (it has no run.json of one), "
                          f"and a new run would replace {'it' if len(present) == 1 else 'them'}; choose another --run-dir (a new or empty folder).")


def read_metrics(path: Path | str) -> Tuple[List[Dict[str, str]], int]:
    """The rows of a run's ``metrics.csv`` whose every field reads as a number (as written), and the
    number of lines that did not: a line cut short by a crash mid-write, or a hand edit. Those are
    left out, so that plots and resumes go on with the rest."""
    rows: List[Dict[str, str]] = []
    unreadable = 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        present = [key for key in METRIC_FIELDS if key in (reader.fieldnames or [])]  # older runs lack some
        for row in reader:
            try:
                for key in present:
                    float(row[key])
                int(row["epoch"])
            except (KeyError, TypeError, ValueError):
                unreadable += 1
                continue
            rows.append({key: row.get(key) or "nan" for key in METRIC_FIELDS})  # a column older runs lack: not measured
    return rows, unreadable


def config_changes(checkpoint_config: Dict[str, Any], config: Any) -> Dict[str, Any]:
    """Settings of ``config`` (a RunConfig) that differ from the config a checkpoint was written
    with, other than those a resumed run may change (``config.RESUMABLE_SETTINGS``): ``{key: (old, new)}``."""
    old = checkpoint_config or {}
    try:  # fill in defaults (also those this version added since the checkpoint was written)
        old = config_from_dict(old).to_dict_with_option_defaults()
    except ConfigError as e:
        if old:
            # a setting this version does not know (a run written by a newer pyro-vae) would otherwise
            # show every default as a change
            raise CheckpointError(
                f"the checkpoint's config is not valid for pyro-vae {__version__} ({e}); the run was probably written by "
                "another version of pyro-vae: resume or load it with that version, or start a new run folder."
            ) from None
    return changed_settings(old, config.to_dict_with_option_defaults())


def data_changes(run_dir: Path, data_info: Dict[str, Any], checkpoint: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Splits whose data differ from what the run was trained on (by fingerprint), as run.json
    recorded it or, where run.json is gone, the checkpoint: ``{"data contents (split)": (recorded,
    now)}``; empty for runs that recorded none."""
    try:
        recorded = json.loads((Path(run_dir) / RUN_RECORD_NAME).read_text())["data"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = (checkpoint or {}).get("data_fingerprint")  # no run.json (deleted, or not written yet)
    if not isinstance(recorded, dict):
        return {}  # a new run, or one written before fingerprints were recorded
    now = data_info.get("fingerprint") or {}
    return {
        f"data contents ({split})": (recorded[split], now[split])
        for split in ("train", "test")
        if split in recorded and split in now and recorded[split] != now[split]
    }
