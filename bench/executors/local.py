"""Local execution: cells one after another in this process, or one worker process per GPU.

Usage:
    >>> summary = run_local(cells, Path("results"))                    # in-process, progress bar over cells
    >>> summary = run_on_gpus(cells, Path("results"), gpus=["0", "1"])  # CUDA_VISIBLE_DEVICES per worker

Workers share the cell list and take cells by per-cell lock, so no cell runs twice and a killed worker's
cells are picked up on the next run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)


def run_local(cells: list[dict], root: Path, force: bool = False, progress: bool = True) -> Counter:
    from bench.cell import run_cell

    counts: Counter = Counter()
    bar = tqdm(cells, desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    for cell in bar:
        c = cell["config"]
        bar.set_postfix_str(f"{c['method']} {c['dataset']} K={c['shots']} seed={c['seed']}")
        result = run_cell(cell, root, force=force)
        counts[result.get("status", "failed")] += 1
        if result.get("status") == "failed":
            tqdm.write(f"FAILED {c['method']} {c['dataset']} K={c['shots']} seed={c['seed']}: "
                       f"{(result.get('error') or {}).get('message')} (log: {(result.get('error') or {}).get('log')})")
    return counts


def run_on_gpus(cells: list[dict], root: Path, gpus: list[str], force: bool = False) -> Counter:
    """Start one `bench worker` per GPU over the same cell file and wait for all of them."""
    fd, path = tempfile.mkstemp(prefix="bench-cells-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(cells, fh)
    procs = []
    for gpu in gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        cmd = [sys.executable, "-m", "bench", "worker", path, "--results", str(root)] + (["--force"] if force else [])
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    os.unlink(path)
    if any(codes):
        logger.warning("worker exit codes: %s", codes)
    from bench.results import ResultStore

    store = ResultStore(root)
    return Counter(store.status(c) for c in cells)
