"""The device a run computes on, and a record of the hardware and software that rounded its numbers."""

from __future__ import annotations

import os
import platform
from typing import Any, Dict, Optional

import pyro
import torch

from pyro_vae import __version__
from pyro_vae.errors import ConfigError
from pyro_vae.speed import allocator


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} was asked for but no CUDA GPU is available to this torch "
                f"({torch.__version__}); use --device cpu or --device auto (in a config, device: cpu; load_run takes device=\"cpu\")."
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
        return dev
    return torch.device(name)


def _cpu_model() -> str:
    """The processor's name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device(device: torch.device, threads: Optional[int] = None) -> str:
    """The device in words, for benchmark output: ``cpu (AMD EPYC, 2 threads, torch 2.x, freed
    memory kept)`` (what ``allocator.keep_freed_memory`` did) or
    ``cuda:0 (NVIDIA H100 ..., torch 2.x)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)}, torch {torch.__version__})"
    count = threads if threads is not None else torch.get_num_threads()
    return f"{device} ({_cpu_model()}, {count} threads, torch {torch.__version__}, freed memory {allocator.state()})"


# Environment variables that make torch, oneDNN or MKL choose other CPU kernels than the processor's
# best (each rounds differently: see ``hardware``).
CPU_KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def versions() -> Dict[str, str]:
    """The versions of pyro-vae, torch and Pyro computing now, for ``run.json`` (at training) and
    every evaluation's JSON (which may come later, under other versions)."""
    return {"pyro_vae": __version__, "torch": torch.__version__, "pyro": pyro.__version__}


def hardware(device: torch.device) -> Dict[str, Any]:
    """What computed a run's numbers, for ``run.json`` and every evaluation's JSON.

    Float rounding depends on the kernels torch, oneDNN and MKL pick for the processor (AVX2 or
    AVX-512), and over thousands of optimizer steps it moves the last printed digits of the same
    code and seed. So the record names the processor, torch's kernel level
    (``torch.backends.cpu.get_cpu_capability``) and any of the variables that choose other kernels;
    on CUDA, the GPU and the CUDA version."""
    if device.type == "cuda":
        return {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    info: Dict[str, Any] = {"cpu": _cpu_model()}
    capability = getattr(torch.backends.cpu, "get_cpu_capability", None)  # torch >= 2.1
    if capability is not None:
        info["torch_cpu_kernels"] = capability()
    chosen = {name: os.environ[name] for name in CPU_KERNEL_VARIABLES if name in os.environ}
    if chosen:
        info["kernel_variables"] = chosen
    return info


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings on CUDA would otherwise measure only launches)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def available_memory() -> Optional[int]:
    """Bytes of memory the system has available now (Linux: ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits_in_memory(n_bytes: float, what: str, fix: str) -> None:
    """Raise a ConfigError before allocating ``n_bytes`` for ``what`` when the machine has less
    memory available, with ``fix`` as the advice (the setting to lower)."""
    available = available_memory()
    if available is not None and n_bytes > available:
        raise ConfigError(f"{what} would take {n_bytes / 2**30:.1f} GiB of memory and {available / 2**30:.1f} GiB are "
                          f"available; {fix}.")
