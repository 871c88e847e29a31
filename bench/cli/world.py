"""`bench world`: build (or verify and reuse) the offline mini world and print where it lives; `--check` compares
its content hashes with the reference ones that ship with bench (exit 1 on a difference)."""

from __future__ import annotations

HELP = "build or reuse the mini world (tiny pretrained CLIP + miniature CoOp-layout suite); --check its hashes"
EPILOG = """examples:
  bench world
  bench world --check            # is this the reference world (the README's numbers)? exit 1 if not
  bench world --check --tiny     # the same for the seconds-long CI world
  BENCH_CACHE=/tmp/bench-cache bench world
"""


def add_arguments(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--check", action="store_true",
                   help="compare the world's content hashes with bench's reference ones; exit 1 if any differs")
    p.add_argument("--tiny", action="store_true", help="the tiny CI world (64 corpus images, 2 steps, 2 datasets)")


def execute(args) -> int:
    from bench.mini.world import TINY, BuildConfig, ensure_world

    config = TINY if args.tiny else BuildConfig()
    world = ensure_world(seed=args.seed, config=config, progress=lambda m: print(f"[mini world] {m}", flush=True))
    print(f"mini world ready: data {world.data_root}, weights {world.checkpoint}, datasets {', '.join(world.datasets)}")
    if not args.check:
        return 0
    from bench.mini.reference import check, report

    result = check(world.root, args.seed, config)
    print("\n".join(report(result)))
    return 0 if result.ok else 1
