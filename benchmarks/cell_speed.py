"""End-to-end cells, slow path (PIL per image, DataLoader, full-context prompts) vs fast path (decode once,
device-side augmentation, shared decoded test cache, truncated prompts), in one process tree.

Usage:
    python benchmarks/cell_speed.py                         # bench-mini, clipfit,coop,zeroshot × 3 seeds, CPU
    python benchmarks/cell_speed.py --backbone ViT-B-16 --epochs 1 --test 5 --seeds 1   # compute-bound
    python benchmarks/cell_speed.py --methods clipfit,coop,clip_adapter,lora,zeroshot --epochs 5

Data: a generated CoOp-layout tree of JPEG photos (default 100 classes, 16 train shots, 375×500 px, 25 test images
per class = 2,500), written once under --data (kept between runs). Each path runs the same sweep with
`--set fast=true|false` into its own results tree, with an empty decoded-test cache for the fast path so its
one-time decode is counted. Prints per method: data (train decode), train, eval seconds summed over cells,
train images/s, peak memory; then each sweep's wall time, the speed-up, and the accuracies of both paths.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


PATHS = {"slow": ["fast=false"], "fast": ["fast=true"], "fast+compile": ["fast=true", "compile=true"]}


def sweep(args, data: Path, path: str, root: Path) -> float:
    from bench.cli import main as bench

    argv = ["run", "--backbone", args.backbone, "--pretrained", "none", "--datasets", "synth", "--data-root",
            str(data), "--methods", args.methods, "--shots", str(args.shots), "--seeds", args.seeds,
            "--results", str(root), "--no-leaderboard", "--set", f"epochs={args.epochs}",
            "--set", f"iters_per_shot={args.iters_per_shot}"]
    for setting in PATHS[path]:
        argv += ["--set", setting]
    t0 = time.perf_counter()
    if bench(argv) != 0:
        sys.exit(f"the {path} sweep failed; see bench status {root}")
    return time.perf_counter() - t0


def summary(root: Path) -> dict:
    from bench.results import ResultStore

    out: dict = {}
    for _, res in ResultStore(root).iter_results():
        m, c = res["config"]["method"], res["cost"]
        row = out.setdefault(m, {"data_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "ips": [], "peak": 0.0, "acc": []})
        row["data_s"] += c.get("data_s", 0.0)
        row["train_s"] += c["train_s"]
        row["eval_s"] += c["eval_s"]
        row["ips"].append(c["images_per_s"])
        row["peak"] = max(row["peak"], c["peak_mem_mb"])
        row["acc"].append(res["metrics"]["all"]["acc"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="bench-mini")
    p.add_argument("--methods", default="clipfit,coop,zeroshot")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--test", type=int, default=25, help="test images per class")
    p.add_argument("--epochs", type=int, default=2, help="epoch budget per cell (--set epochs)")
    p.add_argument("--iters-per-shot", type=int, default=2, help="iteration budget of LoRA / full FT per shot")
    p.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-cell-speed")
    p.add_argument("--compile", action="store_true", help="also run the fast path with --set compile=true")
    args = p.parse_args()
    from tabulate import tabulate

    from bench.data.synthetic import make_dataset

    data, cards = args.data / f"data-{args.classes}-{args.shots}-{args.test}", args.data / "cards"
    t0 = time.perf_counter()
    make_dataset(data, cards, "synth", args.classes, (args.shots, 4, args.test), size=(375, 500))
    print(f"data: {args.classes} classes × ({args.shots} train + 4 val + {args.test} test) JPEGs, 375×500 px "
          f"({time.perf_counter() - t0:.0f} s to generate or check)", flush=True)
    os.environ["BENCH_CARDS_PATH"] = str(cards)
    work = Path(tempfile.mkdtemp(prefix="bench-cell-speed-"))
    os.environ["BENCH_DECODE_CACHE"] = str(work / "decoded")
    walls, tables = {}, {}
    paths = ["slow", "fast"] + (["fast+compile"] if args.compile else [])
    for name in paths:
        shutil.rmtree(work / "decoded", ignore_errors=True)
        walls[name] = sweep(args, data, name, work / name)
        tables[name] = summary(work / name)
        print(f"{name} sweep: {walls[name]:.1f} s", flush=True)
    rows = []
    for method in tables["slow"]:
        for name in paths:
            r = tables[name][method]
            ips = sum(r["ips"]) / len(r["ips"]) if r["ips"] else 0.0
            acc = sum(r["acc"]) / len(r["acc"])
            rows.append([method, name, f"{r['data_s']:.1f}", f"{r['train_s']:.1f}", f"{r['eval_s']:.1f}",
                         f"{ips:.0f}" if ips else "—", f"{r['peak']:.0f}", f"{acc:.2f}"])
    print(f"\n{args.backbone} · {args.methods} × seeds {args.seeds} · K={args.shots} · {args.epochs} epoch(s)")
    print(tabulate(rows, headers=["method", "path", "data s", "train s", "eval s", "train img/s", "peak MiB",
                                  "mean acc"], tablefmt="github"))
    print("\nsweep wall time: " + ", ".join(f"{n} {walls[n]:.1f} s" for n in paths)
          + f"; fast vs slow {walls['slow'] / walls['fast']:.2f}× (results in {work})")


if __name__ == "__main__":
    main()
