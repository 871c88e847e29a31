"""`bench run`: expand the grid, skip completed cells, run the rest, then regenerate the leaderboard."""

from __future__ import annotations

HELP = "run a grid of methods × datasets × shots × seeds (default: the offline mini world)"
EPILOG = """examples:
  bench run --methods clipfit,coop --shots 1,4,16                 # mini world, CPU, offline
  bench run --suite coop11 --data-root $DATA --backbone ViT-B-16 --pretrained openai --methods clipfit
  bench run --protocol base2new --suite coop11 --data-root $DATA --executor slurm --profile mycluster
  bench run --methods lora --gpus 0,1,2,3 --suite coop11 --data-root $DATA
"""


def add_arguments(p) -> None:
    from bench.cli._grid_args import add_grid_arguments

    add_grid_arguments(p)
    e = p.add_argument_group("execution")
    e.add_argument("--executor", choices=["local", "slurm", "debug"], default="local")
    e.add_argument("--gpus", help="local: comma-separated GPU ids, one worker process per GPU")
    e.add_argument("--cells-per-gpu", type=int, metavar="N",
                   help="run N cells at once on each GPU (local, and inside each SLURM task), as memory allows")
    e.add_argument("--workers", type=int, metavar="N",
                   help="local, on the CPU: run N cells at once, each on CPUs/N threads, as memory allows "
                        "(default: one per CPU; $BENCH_WORKERS; 1 runs them in this process)")
    e.add_argument("--force", action="store_true", help="rerun cells even when a completed result exists")
    e.add_argument("--retry-failed", action="store_true", help="run only the cells whose last result failed")
    e.add_argument("--no-leaderboard", action="store_true", help="do not regenerate results/LEADERBOARD.md")
    s = p.add_argument_group("slurm (flags override --profile)")
    s.add_argument("--profile", help="a profile name (shipped: local, gpu-cluster.example; yours in "
                                     "~/.config/bench/profiles or BENCH_PROFILES_PATH) or a YAML path")
    for flag, typ in (("partition", str), ("gpus-per-node", int), ("cpus-per-task", int), ("mem-gb", float),
                      ("timeout-min", int), ("account", str), ("qos", str), ("array-parallelism", int),
                      ("cells-per-job", int), ("max-array-size", int)):
        s.add_argument(f"--{flag}", type=typ)
    s.add_argument("--setup", action="append", help="shell line run before each task (repeatable)")
    s.add_argument("--wait", action="store_true", help="follow the submitted jobs with a progress bar")


def _slurm_options(args):
    from bench.profiles import slurm_options

    keys = ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "account", "qos",
            "array_parallelism", "cells_per_job", "cells_per_gpu", "max_array_size", "setup")
    return slurm_options(args.profile, **{k: getattr(args, k) for k in keys})


def execute(args) -> int:
    import hashlib

    from bench.backbone_spec import resolve_backbone
    from bench.cli._grid_args import build_grid
    from bench.grid import expand
    from bench.regime import marks
    from bench.results import ResultStore, utcnow

    store = ResultStore(args.results)

    def flag_checks(grid) -> None:             # before the mini world is built or waited for
        if args.executor in ("slurm", "debug"):
            _slurm_options(args)
        else:
            from bench.executors.local import requested_workers

            requested_workers(args.workers)
            if grid.regime != "default" and not args.gpus:     # pure fp16 on this machine's device
                from bench.cell import _device
                from bench.regime import check_fp16

                check_fp16(_device())
        store.check_writable()                 # last: it creates the results root

    grid = build_grid(args, prepare_world=True, before_data=flag_checks)
    cells = expand(grid)
    spec = resolve_backbone(grid.backbone, grid.pretrained, grid.activation)   # the notice, if any: _check_backbone
    status = {c["cell_id"]: store.status(c) for c in cells}
    if args.retry_failed:
        todo = [c for c in cells if status[c["cell_id"]] == "failed"]
    else:
        todo = [c for c in cells if args.force or status[c["cell_id"]] != "completed"]
    sweep_id = utcnow().replace(":", "").replace("-", "") + "-" + hashlib.sha256(
        "".join(c["cell_id"] for c in cells).encode()).hexdigest()[:8]
    keys = ("method", "variant", "dataset", "protocol", "shots", "seed", "backbone", "pretrained", "activation")
    sweep = {"sweep_id": sweep_id, "created_at": utcnow(), "executor": args.executor,
             "cells": [{"cell_id": c["cell_id"], **{k: c["config"][k] for k in keys},
                        **({"regime": c["config"].get("regime", "default"), "params": c["config"]["params"]}
                           if marks(c["config"]) else {})} for c in cells], "jobs": {}}
    print(f"{len(cells)} cells, {len(cells) - len(todo)} already complete, {len(todo)} to run "
          f"({spec.label}/{spec.weights_label}, {spec.activation}"
          + (f", regime {grid.regime}" if grid.regime != "default" else "") + f"; results in {args.results})", flush=True)
    cluster = bool(todo) and args.executor in ("slurm", "debug")
    options = _slurm_options(args) if cluster else None
    per_device = _cells_at_once(args, len(todo)) if todo and not cluster else 1
    if todo:
        _check_backbone(grid, load=args.executor == "local" and not args.gpus and per_device == 1)
    if not cluster:
        store.write_sweep(sweep)                # only an accepted run is a sweep whose cells the leaderboard expects
    failed = 0
    if cluster:
        from bench.executors.slurm import submit, wait

        jobs, sweep["jobs"] = submit(todo, args.results, options, cluster=args.executor, force=args.force)
        store.write_sweep(sweep)
        print(f"submitted {len(todo)} cells as {len(jobs)} task(s); follow with: bench status {args.results}")
        if args.executor == "debug" or args.wait:
            if args.executor == "debug":
                for job in jobs:
                    job.result()
            else:
                wait(jobs)
            failed = sum(store.status(c) == "failed" for c in todo)
        else:
            return 0
    elif todo and (args.gpus or per_device > 1):
        from bench.executors.local import run_packed

        devices = [g.strip() for g in args.gpus.split(",")] if args.gpus else [None]
        failed = run_packed(todo, args.results, devices, per_device, args.force)["failed"]
    elif todo:
        from bench.executors.local import run_local

        failed = run_local(todo, args.results, force=args.force)["failed"]
    if not args.no_leaderboard:
        _leaderboard(args.results)
    if failed:
        print(f"{failed} cell(s) failed; see `bench status {args.results}`")
    return 1 if failed else 0


def _cells_at_once(args, cells: int) -> int:
    """Cells at once per device: --cells-per-gpu on a GPU (default 1); on the CPU --workers (or --cells-per-gpu),
    else $BENCH_WORKERS, else one per CPU (bench.executors.local.cpu_workers)."""
    from bench.device_target import local_device_kind
    from bench.executors.local import cpu_workers

    if args.gpus or local_device_kind() == "cuda":
        return args.cells_per_gpu or 1
    return cpu_workers(args.workers if args.workers is not None else args.cells_per_gpu, cells)


def _check_backbone(grid, load: bool) -> None:
    """Fail fast, once, on an unknown backbone/tag or unreachable weights (in-process runs reuse the load)."""
    from bench import backbone

    if load:
        backbone.load_backbone(grid.backbone, grid.pretrained, grid.activation)
    else:
        backbone.check_backbone(grid.backbone, grid.pretrained, grid.activation)


def _leaderboard(root) -> None:
    from bench.report.leaderboard import write_leaderboard

    path = write_leaderboard(root, html=True)
    print(f"leaderboard: {path} (and {path.with_name('LEADERBOARD.html').name})")
