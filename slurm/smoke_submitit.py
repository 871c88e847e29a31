"""submitit checks for slurm/smoke.sh, run against the local cluster of slurm/start.sh.

The submitted callables live in this module (not in __main__) so that the jobs can unpickle them; smoke.sh puts this
directory on PYTHONPATH (sbatch exports the environment to the jobs) and calls `main()`.
Prints one `PASS ...` / `FAIL ...` line per check.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import submitit


def square(x: int) -> dict:
    return {"value": x * x, "job_id": os.environ.get("SLURM_JOB_ID"),
            "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID")}


class Counter(submitit.helpers.Checkpointable):
    """Counts `steps` half-second steps; when preempted (USR2) submitit pickles it mid-count and requeues the job."""

    def __init__(self, marker_dir: str, steps: int) -> None:
        self.marker_dir = marker_dir
        self.steps = steps
        self.done = 0
        self.starts = 0

    def __call__(self) -> dict:
        self.starts += 1
        marker = Path(self.marker_dir)
        (marker / f"start{self.starts}").write_text(f"{time.time()} {self.done}\n")
        while self.done < self.steps:
            time.sleep(0.5)
            self.done += 1
            (marker / "progress").write_text(str(self.done))
        return {"starts": self.starts, "done": self.done, "job_id": os.environ.get("SLURM_JOB_ID"),
                "restart_count": os.environ.get("SLURM_RESTART_COUNT")}


def _executor(folder: Path, partition: str | None) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="slurm")
    params = dict(timeout_min=10, cpus_per_task=1, slurm_array_parallelism=4)
    if partition:
        params["slurm_partition"] = partition
    ex.update_parameters(**params)
    return ex


def check_map_array(folder: Path, partition: str | None) -> bool:
    t0 = time.time()
    ex = _executor(folder, partition)
    jobs = ex.map_array(square, [1, 2, 3, 4])
    ids = [j.job_id for j in jobs]
    results = [j.result() for j in jobs]
    dt = time.time() - t0
    values = [r["value"] for r in results]
    ok = values == [1, 4, 9, 16] and len({r["array_job_id"] for r in results}) == 1
    print(f"{'PASS' if ok else 'FAIL'} submitit map_array of 4: values={values} job_ids={ids} "
          f"SLURM_JOB_IDs={[r['job_id'] for r in results]} ({dt:.1f}s)", flush=True)
    return ok


def check_checkpoint_requeue(folder: Path, partition: str | None) -> bool:
    t0 = time.time()
    marker = folder / "counter"
    marker.mkdir(parents=True, exist_ok=True)
    ex = _executor(folder, partition)
    job = ex.submit(Counter(str(marker), steps=12))
    progress = marker / "progress"
    deadline = time.time() + 120
    while not (progress.exists() and int(progress.read_text() or 0) >= 2):
        if time.time() > deadline or job.done():
            print(f"FAIL submitit Checkpointable requeue: job {job.job_id} never got going "
                  f"(state {job.state})", flush=True)
            return False
        time.sleep(0.2)
    at_signal = int(progress.read_text() or 0)
    t_sig = time.time()
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
    result = job.result()
    t_end = time.time()
    start2 = marker / "start2"
    restart_s = float(start2.read_text().split()[0]) - t_sig if start2.exists() else float("nan")
    resumed_from = int(start2.read_text().split()[1]) if start2.exists() else -1
    ok = result["starts"] == 2 and result["done"] == 12 and resumed_from >= at_signal
    print(f"{'PASS' if ok else 'FAIL'} submitit Checkpointable requeue: job {job.job_id} USR2 at step {at_signal}, "
          f"restarted from step {resumed_from} {restart_s:.1f}s after the signal, result={result} "
          f"(signal->result {t_end - t_sig:.1f}s, total {t_end - t0:.1f}s)", flush=True)
    return ok


def main(folder: str, partition: str | None = None) -> int:
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    failed = 0
    for check in (check_map_array, check_checkpoint_requeue):
        try:
            failed += not check(root, partition)
        except Exception as e:  # noqa: BLE001 -- report and go on with the next check
            print(f"FAIL {check.__name__}: {type(e).__name__}: {e}", flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    # Run via `python -c 'import smoke_submitit; ...main(...)'`: functions pickled from __main__ would not import.
    sys.exit("run this through slurm/smoke.sh")
