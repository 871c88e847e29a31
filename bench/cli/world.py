"""`bench world`: build (or verify and reuse) the offline mini world and print where it lives."""

from __future__ import annotations

HELP = "build or reuse the mini world (tiny pretrained CLIP + miniature CoOp-layout suite)"
EPILOG = """examples:
  bench world
  BENCH_CACHE=/tmp/bench-cache bench world
"""


def add_arguments(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")


def execute(args) -> int:
    from bench.mini.world import ensure_world

    world = ensure_world(seed=args.seed, progress=lambda m: print(f"[mini world] {m}", flush=True))
    print(f"mini world ready: data {world.data_root}, weights {world.checkpoint}, datasets {', '.join(world.datasets)}")
    return 0
