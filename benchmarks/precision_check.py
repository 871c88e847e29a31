"""Does autocast change results? Every method × {fewshot, base2new, xd} on the mini world under fp32, bf16 and fp16
(fp32 master weights), one seed; prints each cell's accuracy difference from its fp32 cell.

Usage:
    python benchmarks/precision_check.py                       # ~30 minutes on 2 CPU cores (world built once)
    python benchmarks/precision_check.py --shots 4 --keep /tmp/prec
    python benchmarks/precision_check.py --datasets mini_shapes,mini_digits      # ~1/3 of the cells

Cells: few-shot K (default 4) and base-to-new K = 16 on the six mini datasets, cross-dataset from mini_shapes
to the other five. The mini suite's budgets apply. Prints the largest |Δ| per precision and every cell over the
tolerance (default 2 points); exits non-zero if any cell failed or exceeded it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = ("zeroshot,clipfit,coop,clip_adapter,lora,full_ft,linear_probe,"
           "cocoop,kgcoop,maple,promptsrc,tip_adapter,tip_adapter_f,bitfit")
MINI = ["mini_shapes", "mini_colors", "mini_textures", "mini_digits", "mini_combos", "mini_sketches"]


def accuracies(root: Path) -> dict[tuple, float]:
    from bench.results import ResultStore

    out = {}
    for _, res in ResultStore(root).iter_results():
        c = res["config"]
        for name, m in (res.get("metrics") or {}).items():
            out[(c["protocol"], c["method"], c["dataset"], name)] = m["acc"] if res["status"] == "completed" else None
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--datasets", default=",".join(MINI),
                   help="few-shot and base-to-new datasets (default: all six; xd always goes mini_shapes → the rest)")
    p.add_argument("--shots", default="4")
    p.add_argument("--seed", default="1")
    p.add_argument("--tolerance", type=float, default=2.0)
    p.add_argument("--keep", type=Path, help="keep the results trees here")
    args = p.parse_args()
    from tabulate import tabulate

    from bench.cli import main as bench

    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-precision-"))
    runs = {"fewshot": ["--protocol", "fewshot", "--shots", args.shots, "--datasets", args.datasets],
            "base2new": ["--protocol", "base2new", "--datasets", args.datasets],
            "xd": ["--protocol", "xd", "--source", "mini_shapes", "--targets", ",".join(MINI[1:])]}
    acc, failed = {}, 0
    for precision in ("fp32", "bf16", "fp16"):
        root = base / precision
        for extra in runs.values():
            code = bench(["run", "--suite", "mini", "--methods", args.methods, "--seeds", args.seed, "--results", str(root),
                          "--set", f"precision={precision}", "--no-leaderboard", *extra])
            failed += code != 0
        acc[precision] = accuracies(root)
    rows, worst = [], {}
    for precision in ("bf16", "fp16"):
        for key, ref in sorted(acc["fp32"].items()):
            value = acc[precision].get(key)
            if ref is None or value is None:
                rows.append([precision, *key, ref, value, "missing/failed"])
                failed += 1
                continue
            delta = value - ref
            worst[precision] = max(worst.get(precision, 0.0), abs(delta))
            if abs(delta) > args.tolerance:
                rows.append([precision, *key, f"{ref:.2f}", f"{value:.2f}", f"{delta:+.2f}"])
    n = len(acc["fp32"])
    print(f"\n{n} evaluations per precision (results in {base})")
    for precision, value in worst.items():
        print(f"{precision}: largest |Δ acc| vs fp32 = {value:.2f} points")
    if rows:
        print(tabulate(rows, headers=["precision", "protocol", "method", "dataset", "eval", "fp32", "acc", "Δ"],
                       tablefmt="github"))
    return 1 if rows or failed else 0


if __name__ == "__main__":
    sys.exit(main())
