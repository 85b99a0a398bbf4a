"""Keep freed CPU memory inside the process (glibc's malloc), for steady speed on CPU.

IWAE-k scores each chunk of particles with tensors of tens of MiB (the decoder's hidden layer and
logits, the likelihood's temporaries), frees them, and allocates them again for the next chunk.
glibc serves such blocks from its heap, but once more than its trim threshold lies free at the top
of the heap it hands the pages back to the kernel, and the next chunk page-faults all of them in
again. Whether that happens depends on the order of earlier allocations, so without this the same
evaluation runs at one of two speeds from one process to the next.

``keep_freed_memory`` raises glibc's trim and mmap thresholds to 1 GiB (``mallopt``), so freed
blocks below that size stay in the process and are reused without page faults; the process keeps
its peak memory instead of returning it. The ``pyro-vae`` command, the ``examples/`` scripts and
the benchmarks call it at start (they own their processes); library users may call it themselves.
It leaves the allocator alone where the user has tuned glibc's malloc through the environment
(``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``), where
``PYRO_VAE_KEEP_FREED_MEMORY=0``, and off glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Literal, Optional

from pyro_vae.speed.switches import Switch

THRESHOLD_BYTES = 2**30
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3

switched_on = Switch(
    "PYRO_VAE_KEEP_FREED_MEMORY", on="the pyro-vae command has glibc keep freed CPU memory for reuse",
    off="glibc's default, which returns freed memory to the kernel",
)

State = Literal["kept", "off", "user settings", "unavailable", "not applied"]
_state: Optional[State] = None


_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_USER_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold", "glibc.malloc.top_pad", "glibc.malloc.mmap_max")


def _user_tuned_malloc() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(k in os.environ for k in _USER_SETTINGS) or any(t in tunables for t in _USER_TUNABLES)


def keep_freed_memory() -> State:
    """Raise glibc's trim and mmap thresholds to ``THRESHOLD_BYTES``, once per process.

    :returns: ``"kept"`` if applied, ``"off"`` (``PYRO_VAE_KEEP_FREED_MEMORY=0``), ``"user settings"``
        (malloc tuned through the environment) or ``"unavailable"`` (no glibc ``mallopt``).
    """
    global _state
    if _state is not None:
        return _state
    if not switched_on():
        _state = "off"
    elif _user_tuned_malloc():
        _state = "user settings"
    else:
        _state = "kept" if _mallopt_thresholds(THRESHOLD_BYTES) else "unavailable"
    return _state


def state() -> State:
    """What ``keep_freed_memory`` did in this process (``"not applied"`` if it was not called:
    a library user's process, which pyro-vae leaves as it is)."""
    return _state or "not applied"


def _mallopt_thresholds(size: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # trim first: setting either one also stops glibc's own adjustment of the mmap threshold
    return mallopt(_M_TRIM_THRESHOLD, size) == 1 and mallopt(_M_MMAP_THRESHOLD, size) == 1
