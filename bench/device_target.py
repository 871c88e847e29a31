"""Which kind of device a cell is planned for, "cuda" or "cpu", decided without importing torch.

Usage:
    >>> from bench.device_target import local_device_kind, planned_device
    >>> local_device_kind()                    # this machine: "cuda" when torch would find a GPU here
    >>> planned_device("auto", executor="slurm", slurm_gpus=1)
    'cuda'

`precision: auto` means bf16 on CUDA and fp32 on the CPU, so the device must be known when a cell is named
(bench.grid resolves the precision into the cell's config and id). The rule: an explicit `--device cuda|cpu`
wins; a SLURM run plans for a GPU when its profile asks for GPUs (`gpus_per_node` > 0); `--gpus` plans for CUDA;
anything else runs here, so it plans for this machine. `bench plan` must not import torch, so this machine is
probed the way torch decides: a torch built with CUDA or ROCm (its version.py, read as text) and a GPU the driver
shows (/proc/driver/nvidia/gpus, /dev/kfd for ROCm) that CUDA_VISIBLE_DEVICES does not hide. When torch is already
imported (a worker), torch itself answers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

DEVICE_KINDS = ("cuda", "cpu")
_HIDDEN = {"", "-1", "NoDevFiles"}


def _torch_has_gpu_build() -> bool:
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return False
    return bool(re.search(r"^(cuda|hip)\b[^=]*=\s*['\"]", text, re.MULTILINE))


def _driver_shows_gpu() -> bool:
    nvidia = Path("/proc/driver/nvidia/gpus")
    try:
        if nvidia.is_dir() and any(nvidia.iterdir()):
            return True
    except OSError:
        pass
    return Path("/dev/kfd").exists()


def local_device_kind() -> str:
    """"cuda" when torch on this machine would use a GPU, else "cpu"."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in _HIDDEN:
        return "cpu"
    return "cuda" if _torch_has_gpu_build() and _driver_shows_gpu() else "cpu"


def planned_device(requested: str | None, executor: str = "local", slurm_gpus: int | None = None,
                   local_gpus: bool = False) -> tuple[str, str]:
    """(device kind, why) for a run: `requested` is the --device flag (auto/None, cuda, cpu)."""
    if requested in DEVICE_KINDS:
        return requested, "--device"
    if executor == "slurm":
        gpus = 1 if slurm_gpus is None else slurm_gpus
        return ("cuda" if gpus > 0 else "cpu"), f"SLURM gpus_per_node={gpus}"
    if local_gpus:
        return "cuda", "--gpus"
    kind = local_device_kind()
    return kind, f"this machine: {'a GPU' if kind == 'cuda' else 'no GPU'} found"
