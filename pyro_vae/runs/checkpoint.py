"""Checkpoints: written atomically, read without unpickling code.

A checkpoint is a dict of tensors, numbers, strings and lists (model and optimizer state dicts,
RNG states, epoch counters). It is written to a temporary file in the same folder, flushed to
disk and renamed over the old one, so a crash mid-write never leaves a broken checkpoint. It is
read with ``torch.load(weights_only=True)``, which refuses any pickled object that is not plain
data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict

import torch

from pyro_vae.errors import CheckpointError
from pyro_vae.files import replaced_atomically

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1
# what every checkpoint of format 1 holds, and the types a run needs to restore from it
REQUIRED = {
    "vae": dict, "optimizer": dict, "epoch": int, "step": int, "samples_seen": int, "wall_seconds": (int, float),
    "torch_rng": torch.Tensor, "shuffle_rng": torch.Tensor,
}


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Write ``state`` (``REQUIRED``'s keys and more) to ``path`` atomically, with the format version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replaced_atomically(path, sync=True) as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
    except OSError as e:  # a full disk, a folder made read-only...
        kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint had been written yet"
        raise CheckpointError(f"cannot write the checkpoint {path} ({e}); {kept}. Free space or fix the folder's permissions, then resume.") from e


def _load_failure(error: Exception) -> str:
    """torch.load's error in one line. Its refusal of a pickled object is a paragraph that ends
    in advice to load with ``weights_only=False`` (running the file's code), which is not given
    here: only the object it names is kept."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return (f"it holds a pickled object ({refused.group(1)}), refused for safety: a pyro-vae checkpoint "
                "holds tensors and plain values only, so this file is from another program or was altered")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return first.split(". ")[0].rstrip(".") + " (the file is corrupt or not a torch checkpoint)"


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """The state saved at ``path`` (a checkpoint file or the run folder holding one), plain data
    only, checked for ``REQUIRED``'s keys and types; a CheckpointError names what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train first (`pyro-vae train CONFIG --run-dir {path.parent}`).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {_load_failure(e)}; retrain or restore the file.") from e
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint (format {FORMAT_VERSION}).")
    damaged = [key for key, kind in REQUIRED.items() if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool)]
    if state.get("config") is not None and not isinstance(state["config"], dict):
        damaged.append("config")
    damaged += [key for key in ("epoch", "step", "samples_seen", "wall_seconds") if key not in damaged and state[key] < 0]
    if damaged:
        raise CheckpointError(
            f"{path} is damaged: {', '.join(damaged)} missing, negative or of the wrong type. Restore the file or retrain."
        )
    return state
