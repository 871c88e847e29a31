"""`bench plan`: the cells a run would execute, which are complete, and where they would go (no torch)."""

from __future__ import annotations

HELP = "dry run: print the grid's cells, which are complete, and what would be submitted where"
EPILOG = """examples:
  bench plan                                          # the mini-world default
  bench plan --suite coop11 --data-root $DATA --methods clipfit,coop --shots 1,16 --seeds 1,2,3
  bench plan --protocol base2new --suite coop11 --data-root $DATA --executor slurm --profile local
  bench plan --methods clipfit --shots 16 --seeds 1 --set lam=4 --explain   # each value and where it came from

Settings, lowest precedence first: TrainConfig / Params defaults < method card params < card train < card
overrides < suite train < suite method_settings < suite input < grid file (--config) set < --set.
"""


def add_arguments(p) -> None:
    from bench.cli._grid_args import add_grid_arguments

    add_grid_arguments(p)
    p.add_argument("--executor", choices=["local", "slurm", "debug"], default="local")
    p.add_argument("--cells-per-job", type=int, default=1)
    p.add_argument("--profile", help="SLURM profile: a name (see `bench run --help`) or a YAML path")
    p.add_argument("--explain", action="store_true",
                   help="print every resolved setting of each cell and the layer it came from")


def execute(args) -> int:
    from collections import Counter

    from tabulate import tabulate

    from bench.backbone_spec import resolve_backbone
    from bench.cli._grid_args import build_grid
    from bench.grid import expand
    from bench.results import ResultStore

    grid = build_grid(args, prepare_world=False)
    if args.profile:
        from bench.profiles import load_profile

        load_profile(args.profile)                      # a bad profile fails here, as it would at submission
    cells = expand(grid)
    spec = resolve_backbone(grid.backbone, grid.pretrained, grid.activation)
    store = ResultStore(args.results)
    rows, counts = [], Counter()
    for cell in cells:
        c = cell["config"]
        status = store.status(cell)
        counts[status] += 1
        rows.append((cell["cell_id"], c["method"], c["dataset"], c["protocol"], c["shots"], c["seed"],
                     status, f"epochs={c['train'].get('epochs')} iters/K={c['train'].get('iters_per_shot')}"
                     if "epochs" in c["train"] else ""))
    print(tabulate(rows, headers=["cell", "method", "dataset", "protocol", "K", "seed", "status", "budget"]))
    if args.explain:
        _explain(grid, cells)
    todo = counts["pending"] + counts["failed"]
    where = args.executor
    if args.executor == "slurm":
        jobs = -(-todo // max(args.cells_per_job, 1))
        where = f"slurm: {jobs} array task(s) of ≤{args.cells_per_job} cell(s), profile {args.profile or 'flags'}"
    print(f"\n{len(cells)} cells: {counts['completed']} completed, {counts['failed']} failed, "
          f"{counts['running']} running, {counts['pending']} pending → {todo} to run on {where}, planned for "
          f"{grid.device} ({grid.device_reason}); "
          f"backbone {spec.label}/{spec.weights_label} ({spec.activation}: {spec.reason}), results in {args.results}"
          + (f"; regime {grid.regime} (bench.regime; its rows are marked)" if grid.regime != "default" else ""))
    if spec.notice:
        print(f"note: {spec.notice}")
    return 0


def _explain(grid, cells) -> None:
    import json

    from tabulate import tabulate

    from bench.grid import explain

    for cell in cells:
        c = cell["config"]
        print(f"\ncell {cell['cell_id']}: {c['method']} · {c['dataset']} · {c['protocol']} · K={c['shots']} · "
              f"seed {c['seed']}")
        rows = [(name, json.dumps(value, default=str), where) for name, value, where in explain(grid, cell)]
        print(tabulate(rows, headers=["setting", "value", "from"], tablefmt="plain", disable_numparse=True))
