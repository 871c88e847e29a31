"""Time aggregation and leaderboard generation over 10,000 fixture result files with per-image predictions
(target: aggregation with intervals, predictions and tie tests < 10 s on 2 cores).

Usage:
    $ .venv/bin/python benchmarks/aggregate_10k.py                 # 10,000 cells in a temp dir
    $ taskset -c 0,1 .venv/bin/python benchmarks/aggregate_10k.py --cells 10000 --keep /tmp/r10k
    $ .venv/bin/python benchmarks/aggregate_10k.py --reuse /tmp/r10k      # time an existing tree again

The tree mixes base-to-new, few-shot and domain-generalisation cells over 11 datasets and many (synthetic) methods,
gives every cell a `ckpt/` folder with files in it, so the walk has to prune them, and a predictions.npz in
bench.cell's format with --images test images per evaluation (base/new: half each; 0 = no predictions).
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

import numpy as np  # noqa: E402
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


def write_tree(root: Path, n: int, images: int) -> None:
    rng = random.Random(0)
    gen = np.random.default_rng(0)
    plan = []
    for method, dataset, protocol, shots, seed, targets in cells(n):
        plan.append(plan_cell(method, dataset, protocol, shots, seed))
        if protocol == "base2new":
            metrics = {"base": rng.uniform(60, 95), "new": rng.uniform(50, 80)}
        elif protocol == "dg":
            metrics = {"source": rng.uniform(65, 75), **{t: rng.uniform(45, 75) for t in targets}}
        else:
            metrics = {"all": rng.uniform(50, 95)}
        size = images // 2 if protocol == "base2new" else images
        predictions = {e: gen.random(size) < acc / 100 for e, acc in metrics.items()} if images else None
        path = write_result(root, method, dataset, protocol=protocol, shots=shots, seed=seed,
                            metrics=None if predictions else metrics, predictions=predictions,
                            targets=list(targets), ckpt=True)
        for i in range(3):
            (path.parent / "ckpt" / f"step{i}.pt").write_bytes(b"\0" * 64)
    write_sweep(root, plan)


CPU: list[float] = []          # process CPU seconds of each timed step, in order (a shared machine's load
                               # inflates the wall-clock seconds; the CPU seconds are what the code costs)


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    CPU.append(time.process_time() - c0)
    return value, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=1000, help="test images per evaluation (0: no predictions)")
    parser.add_argument("--keep", type=Path, help="write the tree here and keep it (default: a temp dir)")
    parser.add_argument("--reuse", type=Path, help="time this existing tree instead of writing one")
    parser.add_argument("--per-image", action="store_true", help="also time the per-image frame (large)")
    args = parser.parse_args()
    root = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="bench-10k-"))
    t_write = 0.0
    if not args.reuse:
        if args.keep and root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
    try:
        if not args.reuse:
            _, t_write = timed(lambda: write_tree(root, args.cells, args.images))
        else:
            CPU.append(0.0)
        from tabulate import tabulate

        from bench.report.aggregate import summaries
        from bench.report.collect import load_results
        from bench.report.intervals import add_intervals
        from bench.report.leaderboard import Board, header_info, sections, write_leaderboard
        from bench.report.reported import compare, load_reported
        from bench.report.uncertainty import Uncertainty

        res, t_load = timed(lambda: load_results(root))
        tables, t_sum = timed(lambda: summaries(res, intervals=False))
        unc, t_unc = timed(lambda: Uncertainty(res.frame))
        _, t_pred = timed(unc._load_correct)
        _, t_ci = timed(lambda: add_intervals(tables, unc))
        board = Board(root, res, tables, compare(tables, load_reported(root)), header_info(res), unc)
        blocks, t_ties = timed(lambda: sections(board))
        _, t_md = timed(lambda: write_leaderboard(root, plots=False))
        _, t_html = timed(lambda: write_leaderboard(root, plots=True, html=True))
        _, t_json = timed(lambda: write_leaderboard(root, fmt="json"))
        c = res.completeness()
        n_pred = sum(len(v) for v in [unc._correct or {}])
        total = t_load + t_sum + t_unc + t_ci + t_pred + t_ties
        rows = [
            ["write fixture tree", f"{t_write:.2f}", f"{args.cells} result.json + predictions.npz ({args.images} "
                                                      "images/eval) + ckpt/ folders" if not args.reuse else "reused"],
            ["load_results (walk + parse)", f"{t_load:.2f}", f"{len(res.frame)} rows, {c['done']}/{c['expected']} done"],
            ["summaries (all tables)", f"{t_sum:.2f}", ", ".join(f"{k}={len(v)}" for k, v in tables.items())],
            ["intervals (seeds × images model)", f"{t_unc + t_ci:.2f}", "every table value, averages and HMs"],
            ["read predictions.npz", f"{t_pred:.2f}", f"{n_pred} (cell, eval) correctness vectors"],
            ["tie tests + grouped ranks", f"{t_ties:.2f}", "paired test vs each column's best, Holm"],
            ["aggregate total", f"{total:.2f}", "all of the above; target < 10 s on 2 cores"],
            ["write_leaderboard md, no plots", f"{t_md:.2f}", "includes its own load + summaries + statistics"],
            ["write_leaderboard md + html + plots", f"{t_html:.2f}", "3 PNGs, LEADERBOARD.html"],
            ["write_leaderboard json", f"{t_json:.2f}", ""],
        ]
        if args.per_image:
            from bench.report.predictions import per_image_frame

            frame, t_pi = timed(lambda: per_image_frame(res.frame))
            rows.append(["per-image frame (--per-image)", f"{t_pi:.2f}",
                         f"{len(frame):,} rows, {frame.memory_usage(deep=True).sum() / 2**20:.0f} MiB"])
        c = CPU                     # write, load, summaries, Uncertainty, predictions, intervals, ties, md, html, json
        cpu = [c[0], c[1], c[2], c[3] + c[5], c[4], c[6], sum(c[1:7]), *c[7:]]
        for row, c in zip(rows, cpu):
            row.insert(2, f"{c:.2f}")
        print(tabulate(rows, headers=["step", "seconds", "CPU s", "notes"], tablefmt="github"))
        return 0 if total < 10 else 1
    finally:
        if not args.keep and not args.reuse:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
