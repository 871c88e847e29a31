"""Time aggregation and leaderboard generation over 10,000 fixture result files (target: aggregate < 10 s on 2 cores).

Usage:
    $ .venv/bin/python benchmarks/aggregate_10k.py                 # 10,000 cells in a temp dir
    $ taskset -c 0,1 .venv/bin/python benchmarks/aggregate_10k.py --cells 10000 --keep /tmp/r10k

The tree mixes base-to-new, few-shot and domain-generalisation cells over 11 datasets and many (synthetic) methods,
and gives every cell a `ckpt/` folder with files in it, so the walk has to prune them.
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from result_fixtures import plan_cell, write_result, write_sweep  # noqa: E402

DATASETS = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
            "sun397", "dtd", "eurosat", "ucf101"]
TARGETS = ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]


def cells(n: int):
    """(method, dataset, protocol, shots, seed, targets) tuples, n of them."""
    methods = (f"method{i:03d}" for i in itertools.count())
    out = []
    while len(out) < n:
        m = next(methods)
        out += [(m, d, "base2new", 16, s, ()) for d in DATASETS for s in (1, 2, 3)]
        out += [(m, d, "fewshot", k, s, ()) for d in DATASETS for k in (1, 2, 4, 8, 16) for s in (1, 2, 3)]
        out += [(m, "imagenet", "dg", 16, s, tuple(TARGETS)) for s in (1, 2, 3)]
    return out[:n]


def write_tree(root: Path, n: int) -> None:
    rng = random.Random(0)
    plan = []
    for method, dataset, protocol, shots, seed, targets in cells(n):
        plan.append(plan_cell(method, dataset, protocol, shots, seed))
        if protocol == "base2new":
            metrics = {"base": rng.uniform(60, 95), "new": rng.uniform(50, 80)}
        elif protocol == "dg":
            metrics = {"source": rng.uniform(65, 75), **{t: rng.uniform(45, 75) for t in targets}}
        else:
            metrics = {"all": rng.uniform(50, 95)}
        path = write_result(root, method, dataset, protocol=protocol, shots=shots, seed=seed, metrics=metrics,
                            targets=list(targets), ckpt=True)
        for i in range(3):
            (path.parent / "ckpt" / f"step{i}.pt").write_bytes(b"\0" * 64)
    write_sweep(root, plan)


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="write the tree here and keep it (default: a temp dir)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-10k-"))
    if args.keep and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        _, t_write = timed(lambda: write_tree(root, args.cells))
        from tabulate import tabulate

        from bench.report.aggregate import summaries
        from bench.report.collect import load_results
        from bench.report.leaderboard import write_leaderboard

        res, t_load = timed(lambda: load_results(root))
        tables, t_sum = timed(lambda: summaries(res))
        _, t_md = timed(lambda: write_leaderboard(root, plots=False))
        _, t_plots = timed(lambda: write_leaderboard(root, plots=True))
        _, t_json = timed(lambda: write_leaderboard(root, fmt="json"))
        c = res.completeness()
        rows = [
            ["write fixture tree", f"{t_write:.2f}", f"{args.cells} result.json + ckpt/ folders"],
            ["load_results (walk + parse)", f"{t_load:.2f}", f"{len(res.frame)} rows, {c['done']}/{c['expected']} done"],
            ["summaries (all tables)", f"{t_sum:.2f}", ", ".join(f"{k}={len(v)}" for k, v in tables.items())],
            ["aggregate total", f"{t_load + t_sum:.2f}", "target < 10 s on 2 cores"],
            ["write_leaderboard md, no plots", f"{t_md:.2f}", "includes its own load + summaries"],
            ["write_leaderboard md + plots", f"{t_plots:.2f}", "3 PNGs"],
            ["write_leaderboard json", f"{t_json:.2f}", ""],
        ]
        print(tabulate(rows, headers=["step", "seconds", "notes"], tablefmt="github"))
        return 0 if t_load + t_sum < 10 else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
