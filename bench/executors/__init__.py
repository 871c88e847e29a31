"""Executors run cells: `local` (in-process), `local --gpus` (a worker process per GPU), `slurm` and `debug`
(submitit). Every executor goes through `bench.cell.run_cell`, which skips completed cells and locks running
ones, so several executors can share one results tree."""

EXECUTORS = ("local", "slurm", "debug")
