"""`bench worker CELLS.json`: run a list of cells in this process (used by `bench run --gpus`)."""

from __future__ import annotations

HELP = "internal: run the cells listed in a JSON file (one worker per GPU)"
EPILOG = """examples:
  CUDA_VISIBLE_DEVICES=0 bench worker /tmp/cells.json --results results
"""


def add_arguments(p) -> None:
    from pathlib import Path

    p.add_argument("cells", type=Path)
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--force", action="store_true")
    p.add_argument("--claims", type=Path, help="folder where the workers of one sweep claim cells (once each)")


def execute(args) -> int:
    import json

    from bench.executors.local import run_local

    counts = run_local(json.loads(args.cells.read_text()), args.results, force=args.force, progress=False,
                       claims=args.claims)
    return 0 if not counts.get("failed") else 1
