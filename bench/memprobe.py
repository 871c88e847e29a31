"""The memory probe of packed workers: a cell's first training step reports its peak memory, so the parent of a
packed sweep can size the packing before any cell has finished.

Usage:
    >>> write_probe(peak_mb(device))   # in a worker (BENCH_PROBE_FILE set by run_packed): one small file, atomic
    >>> read_probes(folder)            # in the parent: every probe written so far, MiB
"""

from __future__ import annotations

import os
from pathlib import Path

PROBE_ENV = "BENCH_PROBE_FILE"


def peak_mb(device) -> float:
    """This process's peak memory on `device`: the CUDA allocator's (host-side statistics, no sync) or max RSS."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_probe(peak_mb: float) -> None:
    path = os.environ.get(PROBE_ENV)
    if path:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{peak_mb:.1f}")
        os.replace(tmp, path)


def read_probes(folder: Path) -> list[float]:
    out = []
    for path in folder.glob("probe-*"):
        if path.name.endswith(".tmp"):
            continue
        try:
            out.append(float(path.read_text()))
        except (OSError, ValueError):
            continue
    return out
