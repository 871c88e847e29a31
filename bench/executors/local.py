"""Local execution: cells one after another in this process, or worker processes packed onto devices.

Usage:
    >>> summary = run_local(cells, Path("results"))                           # in-process, progress bar
    >>> summary = run_packed(cells, Path("results"), devices=["0", "1"])      # one worker per GPU
    >>> summary = run_packed(cells, Path("results"), devices=[None], per_device=4)   # 4 cells at once on one GPU
    >>> cpu_workers(None, cells=186)                                          # on the CPU: one worker per core

On the CPU, `bench run` runs one worker per CPU by default, each on CPUs / workers threads: a small cell keeps one
core busy far better than two (the mini world's default grid on 2 cores: 344 s in one process on 2 threads, 199 s
as 2 single-threaded workers, all 186 metrics identical). `--workers N` or BENCH_WORKERS=N chooses; 1 runs the
cells in this process.

Workers share the cell list and take cells by per-cell lock, so no cell runs twice and a killed worker's cells
are picked up on the next run. Packing: a ViT-B/16 cell at batch 32 uses a small part of a large GPU, so N
workers can share one. The first worker of a device starts at once and reports the memory its first training
step peaked at (a probe file, written without a host sync); the others start together as soon as that probe (or
a finished cell) says the device's free memory holds them all (× 1.3 + 1 GiB each for its CUDA context), or one by
one while it holds one more. Each worker then keeps its backbone, decoded train images and test cache across the
cells it takes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from bench.memprobe import PROBE_ENV, read_probes

logger = logging.getLogger(__name__)

MARGIN, CONTEXT_MB = 1.3, 1024
WORKERS_ENV = "BENCH_WORKERS"


def requested_workers(flag: int | None) -> int | None:
    """--workers, else $BENCH_WORKERS, else None (one per CPU); a one-line error for a value below 1."""
    from bench.errors import BenchError

    if flag is not None:
        if flag < 1:
            raise BenchError(f"--workers must be 1 or more, got {flag}")
        return flag
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise BenchError(f"{WORKERS_ENV} must be a whole number of 1 or more, got {raw!r}")
    return int(raw)


def cpu_workers(flag: int | None, cells: int) -> int:
    """Cells at once on this machine's CPU: --workers / $BENCH_WORKERS, else one per CPU this process may use;
    never more than `cells`, at least 1."""
    from bench.data.decoded import available_cpus

    wanted = requested_workers(flag)
    return max(1, min(wanted if wanted is not None else available_cpus(), cells))


def claim(claims: Path | None, cell: dict) -> bool:
    """Take `cell` for this worker among the workers of one sweep (atomic O_EXCL file); True without claims."""
    if claims is None:
        return True
    try:
        os.close(os.open(claims / cell["cell_id"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def say_failed(config: dict, result: dict) -> None:
    """One line under the progress bar naming a failed cell, its error and its log."""
    error = result.get("error") or {}
    tqdm.write(f"FAILED {config['method']} {config['dataset']} K={config['shots']} seed={config['seed']}: "
               f"{error.get('message')} (log: {error.get('log')})")


def run_local(cells: list[dict], root: Path, force: bool = False, progress: bool = True,
              claims: Path | None = None) -> Counter:
    """Run cells in this process. Sibling workers of one sweep share `claims`, a folder where each cell is
    claimed once, so a cell one of them finished is never run again (with --force too)."""
    from bench.cell import run_cell

    counts: Counter = Counter()
    bar = tqdm(cells, desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    for cell in bar:
        c = cell["config"]
        bar.set_postfix_str(f"{c['method']} {c['dataset']} K={c['shots']} seed={c['seed']}")
        if not claim(claims, cell):
            counts["taken by a sibling worker"] += 1
            continue
        try:
            result = run_cell(cell, root, force=force)
        except OSError as err:         # the results disk itself failed (full, vanished): this cell only
            result = {"status": "failed", "error": {"message": f"{type(err).__name__}: {err}", "log": None}}
        counts[result.get("status", "failed")] += 1
        if result.get("status") == "failed":
            say_failed(c, result)
    return counts


def free_mb(device: str | None) -> float:
    """Free memory of a CUDA device (nvidia-smi, without a CUDA context here), or available host memory."""
    visible = device if device is not None else os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i",
                              visible or "0"], capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return float(out.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    with open("/proc/meminfo") as fh:
        info = dict(line.split(":", 1) for line in fh)
    return float(info["MemAvailable"].split()[0]) / 1024


def _largest_peak(store, cells: list[dict], since: str, probes: Path | None = None) -> float | None:
    peaks = [(res.get("cost") or {}).get("peak_mem_mb") for res in map(store.read, cells)
             if res and res.get("status") == "completed" and res.get("finished_at", "") >= since]
    peaks = [p for p in peaks if p] + (read_probes(probes) if probes is not None else [])
    return max(peaks) if peaks else None


def run_packed(cells: list[dict], root: Path, devices: list[str | None], per_device: int = 1,
               force: bool = False, poll_s: float = 2.0, progress: bool = True) -> Counter:
    """`per_device` `bench worker` processes on each device (None: the visible one, or the CPU) over the same cell
    file, with a progress bar over the cells this sweep finishes."""
    from bench.data.decoded import available_cpus
    from bench.results import ResultStore, utcnow

    store = ResultStore(root)
    since = utcnow()
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    (work / "claims").mkdir()
    (work / "cells.json").write_text(json.dumps(cells))
    threads = str(max(1, available_cpus() // (len(devices) * per_device)))
    cmd = [sys.executable, "-m", "bench", "worker", str(work / "cells.json"), "--results", str(root),
           "--claims", str(work / "claims")] + (["--force"] if force else [])

    started = 0

    def start(device: str | None) -> subprocess.Popen:
        nonlocal started
        started += 1
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
               PROBE_ENV: str(work / f"probe-{started}")}
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        return subprocess.Popen(cmd, env=env)

    procs = {d: [start(d)] for d in devices}
    waiting = {d for d in devices if per_device > 1}
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    open_cells = list(cells)

    def follow() -> None:               # advance the bar by the cells whose result this sweep wrote
        nonlocal open_cells
        still = []
        for cell in open_cells:
            res = store.read(cell)
            if res and res.get("cell_id") == cell["cell_id"] and res.get("finished_at", "") >= since:
                bar.update()
                if res.get("status") == "failed":
                    say_failed(cell["config"], res)
            else:
                still.append(cell)
        open_cells = still

    while any(p.poll() is None for group in procs.values() for p in group):
        follow()
        for device in list(waiting):
            alive = [p for p in procs[device] if p.poll() is None]
            peak = _largest_peak(store, cells, since, work)
            if not alive or len(procs[device]) >= per_device:
                waiting.discard(device)
            elif peak is not None:
                need, free = peak * MARGIN + CONTEXT_MB, free_mb(device)
                more = min(per_device - len(procs[device]), int(free // need))
                if more > 0:
                    for _ in range(more):
                        procs[device].append(start(device))
                    logger.info("device %s: %d worker(s) running (free %.0f MiB, a cell peaks at %.0f MiB)",
                                device, len(procs[device]), free, peak)
                else:
                    logger.warning("device %s: %d cell(s) at once (free %.0f MiB < %.0f MiB for another)",
                                   device, len(procs[device]), free, need)
                    waiting.discard(device)
        time.sleep(poll_s)
    follow()
    bar.close()
    codes = [p.returncode for group in procs.values() for p in group]
    shutil.rmtree(work, ignore_errors=True)
    if any(codes):
        logger.warning("worker exit codes: %s", codes)
    return Counter(store.status(c) for c in cells)
