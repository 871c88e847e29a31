"""SLURM (and submitit's in-process debug) execution: cells packed into job-array tasks through submitit.

Usage:
    >>> jobs = submit(cells, Path("results"), SlurmOptions(partition="gpu", gpus_per_node=1, timeout_min=240))
    $ bench run --executor slurm --profile local --cells-per-job 4 --wait

Each array task runs its cells one after another through `run_cell`, which resumes an unfinished cell from its
epoch checkpoint. On SIGUSR2 (time limit or preemption) submitit calls `CellJob.checkpoint`, which requeues the
same task; the requeued task skips completed cells and resumes the interrupted one. Arrays are chunked to the
cluster's MaxArraySize (from `scontrol show config` when available).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import submitit

from bench.errors import BenchError
from bench.profiles import SlurmOptions, load_profile, slurm_options  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

def cluster_max_array_size() -> int | None:
    if not shutil.which("scontrol"):
        return None
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
    return int(m.group(1)) if m else None


class CellJob(submitit.helpers.Checkpointable):
    """One array task: run its cells in order; requeued on SIGUSR2 and resumed from checkpoints."""

    def __init__(self, cells: list[dict], root: str, force: bool = False, per_gpu: int = 1):
        self.cells, self.root, self.force, self.per_gpu = cells, root, force, per_gpu

    def __call__(self) -> dict[str, str]:
        from bench.cell import run_cell
        from bench.cli import setup_logging
        from bench.results import ResultStore

        setup_logging()
        if self.per_gpu > 1 and len(self.cells) > 1:
            from bench.executors.local import run_packed

            run_packed(self.cells, Path(self.root), [None], self.per_gpu, self.force)
            store = ResultStore(Path(self.root))
            return {c["cell_id"]: store.status(c) for c in self.cells}
        out = {}
        for cell in self.cells:
            out[cell["cell_id"]] = run_cell(cell, Path(self.root), force=self.force).get("status", "failed")
        return out

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # training state is already on disk (per epoch); never force-rerun what completed before the requeue
        return submitit.helpers.DelayedSubmission(CellJob(self.cells, self.root, force=False, per_gpu=self.per_gpu))


def make_executor(root: Path, opts: SlurmOptions, cluster: str) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=str(Path(root).resolve() / "submitit" / "%j"), cluster=cluster,
                                     slurm_max_num_timeout=opts.max_num_timeout)
    params = {"name": "bench", "timeout_min": opts.timeout_min}
    if cluster == "slurm":
        extra = {k: v for k, v in (("account", opts.account), ("qos", opts.qos)) if v}
        params.update(gpus_per_node=opts.gpus_per_node, cpus_per_task=opts.cpus_per_task, mem_gb=opts.mem_gb,
                      slurm_array_parallelism=opts.array_parallelism, slurm_signal_delay_s=opts.signal_delay_s,
                      slurm_setup=list(opts.setup), slurm_additional_parameters=extra)
        if opts.partition:
            params["slurm_partition"] = opts.partition
    executor.update_parameters(**params)
    return executor


def submit(cells: list[dict], root: Path, opts: SlurmOptions, cluster: str = "slurm", force: bool = False):
    """Submit cells as job arrays; returns (jobs, {cell_id: job_id})."""
    if cluster == "slurm" and not shutil.which("sbatch"):
        raise BenchError("--executor slurm needs sbatch on PATH (for a local test cluster: bash slurm/start.sh DIR, "
                         "then source DIR/env.sh)")
    per = max(opts.cells_per_job, 1)
    chunks = [cells[i:i + per] for i in range(0, len(cells), per)]
    cap = opts.max_array_size or (cluster_max_array_size() if cluster == "slurm" else None) or 1000
    executor = make_executor(root, opts, cluster)
    jobs, mapping = [], {}
    for start in range(0, len(chunks), cap):
        part = chunks[start:start + cap]
        submitted = executor.submit_array([CellJob(chunk, str(root), force, opts.cells_per_gpu) for chunk in part])
        for job, chunk in zip(submitted, part):
            for cell in chunk:
                mapping[cell["cell_id"]] = job.job_id
        jobs += submitted
    logger.info("submitted %d cells as %d task(s) in %d array(s)", len(cells), len(jobs),
                (len(chunks) + cap - 1) // cap)
    return jobs, mapping


def wait(jobs, poll_s: float = 2.0) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="jobs", unit="task")
    done: set[int] = set()
    while len(done) < len(jobs):
        for i, job in enumerate(jobs):
            if i not in done and job.done():
                done.add(i)
                bar.update(1)
        time.sleep(0 if len(done) == len(jobs) else poll_s)
    bar.close()


def options_dict(opts: SlurmOptions) -> dict:
    return asdict(opts)
