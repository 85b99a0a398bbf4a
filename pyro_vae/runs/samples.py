"""Draws from a trained model, written as an array: E[x | z] for z ~ p(z), one row per draw.

``pyro-vae sample --out samples.npy`` may ask for far more draws than fit in memory at once (the
decoder's hidden layer alone is 500 floats per draw for the paper's MLP): the draws are decoded in
chunks and appended to the ``.npy`` file, so memory stays at one chunk whatever ``n`` is.
The file is written beside its destination and renamed over it at the end (a crash or a full disk
leaves the old file or none, never half of one), after a check that the disk has room for it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.model import VAE
from pyro_vae.files import replaced_atomically
from pyro_vae.user_numbers import count

CHUNK = 4096  # draws decoded at once: a few MiB of activations for the paper's networks
LARGE = 2**30  # a file this large is announced before it is written


def _size(n_bytes: int) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.2f} {unit}"
    return f"{n_bytes} bytes"


@torch.no_grad()
def write_sample_means(vae: VAE, path: Path | str, n: int, chunk: int = CHUNK) -> Path:
    """Write ``n`` decoder means ``E[x | z], z ~ p(z)`` to ``path`` (``.npy``, float32, shape
    ``(n, x_dim)``), decoding ``chunk`` draws at a time. Draws use torch's global RNG (seed it for
    reproducible samples).

    :raises ConfigError: if the file would not fit on the disk that holds ``path``, or cannot be
        written (the file that was at ``path`` is then left as it was).
    """
    n, chunk = count("n", n), count("chunk", chunk)
    path = Path(path)
    size = n * vae.x_dim * 4
    free = shutil.disk_usage(path.parent).free
    if size > free:
        raise ConfigError(
            f"{n} samples of {vae.x_dim} values need {_size(size)} on disk and {path.parent} has "
            f"{_size(free)} free; ask for fewer (--n) or write elsewhere (--out)."
        )
    if size >= LARGE:
        print(f"pyro-vae: writing {n} samples, {_size(size)}, to {path} ({_size(free)} free); Ctrl-C stops it and "
              "leaves no partial file", file=sys.stderr)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (n, vae.x_dim)}
    try:
        # written in order through a plain file (not a memory map, which a disk filling up meanwhile
        # would answer with SIGBUS instead of an error)
        with replaced_atomically(path) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                f.write(np.ascontiguousarray(vae.sample_means(stop - start).cpu().numpy(), dtype=np.float32).tobytes())
    except OSError as e:
        raise ConfigError(f"cannot write {path} ({e.strerror or e}); free space or choose another path (--out).") from e
    return path
