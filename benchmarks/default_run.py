"""Time the mini-world default run from scratch (world build included) and print the acceptance figures.

Usage:
    python benchmarks/default_run.py                      # fresh cache + results in a temp dir
    python benchmarks/default_run.py --keep /tmp/bench-default

Runs, as subprocesses with a fresh BENCH_CACHE:
  1. bench run --methods zeroshot,clipfit,coop,clip_adapter,lora,full_ft --shots 1,4,16 --seeds 1,2
  2. bench run --protocol base2new --methods zeroshot,clipfit,coop,clip_adapter,lora,full_ft,linear_probe --seeds 1,2
and prints wall times, ClipFit 16-shot vs zero-shot (suite average over 2 seeds, few-shot all-class accuracy and
base-class accuracy), and the base-to-new table with HM for every method.
With --more, also `make run-more`'s grid (the second-wave methods, MORE below) few-shot and base-to-new, timed apart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = "zeroshot,clipfit,coop,clip_adapter,lora,full_ft"
MORE = "cocoop,kgcoop,maple,promptsrc,tip_adapter,tip_adapter_f,bitfit"       # the Makefile's MORE_METHODS


def run(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench", *argv], env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", type=Path, help="use this folder (cache/ and results/) instead of a temp dir")
    p.add_argument("--more", action="store_true", help="also time the second-wave grid (make run-more)")
    args = p.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-default-"))
    env = {**os.environ, "BENCH_CACHE": str(base / "cache"), "HF_HUB_OFFLINE": "1", "BENCH_LOG_LEVEL": "WARNING"}
    results = base / "results"
    t_fs = run(["run", "--methods", METHODS, "--shots", "1,4,16", "--seeds", "1,2", "--results", str(results)], env)
    t_b2n = run(["run", "--protocol", "base2new", "--methods", METHODS + ",linear_probe", "--seeds", "1,2",
                 "--results", str(results)], env)
    t_more = t_more_b2n = 0.0
    if args.more:
        t_more = run(["run", "--methods", MORE, "--shots", "1,4,16", "--seeds", "1,2", "--results", str(results)], env)
        t_more_b2n = run(["run", "--protocol", "base2new", "--methods", MORE, "--seeds", "1,2",
                          "--results", str(results)], env)

    from tabulate import tabulate

    from bench.report.aggregate import base2new_average, base2new_table
    from bench.report.collect import load_results

    res = load_results(results)
    f = res.frame[res.frame["status"] == "completed"]
    fs = f[(f.protocol == "fewshot")]
    zs = fs[fs.method == "zeroshot"].groupby("dataset")["acc"].mean()
    cf = fs[(fs.method == "clipfit") & (fs.shots == 16)].groupby("dataset")["acc"].mean()
    b = f[(f.protocol == "base2new") & (f["eval"] == "base")]
    zb = b[b.method == "zeroshot"].groupby("dataset")["acc"].mean()
    cb = b[b.method == "clipfit"].groupby("dataset")["acc"].mean()
    print(f"\nwall time: few-shot grid incl. world build {t_fs:.0f} s; base-to-new grid {t_b2n:.0f} s; "
          f"total {t_fs + t_b2n:.0f} s (results in {results})")
    if args.more:
        print(f"wall time, second wave (make run-more): few-shot grid {t_more:.0f} s; base-to-new grid {t_more_b2n:.0f} s")
    rows = [(d, zs.get(d), cf.get(d), zb.get(d), cb.get(d)) for d in sorted(zs.index)]
    rows.append(("average", zs.mean(), cf.mean(), zb.mean(), cb.mean()))
    print(tabulate(rows, headers=["dataset", "zero-shot (all)", "ClipFit K=16 (all)", "zero-shot (base)",
                                  "ClipFit K=16 (base)"], floatfmt=".2f", tablefmt="github"))
    print(f"ClipFit 16-shot − zero-shot: all classes {cf.mean() - zs.mean():+.2f}, base classes {cb.mean() - zb.mean():+.2f}")
    table = base2new_table(f)
    print(tabulate(base2new_average(table, f), headers="keys", floatfmt=".2f", tablefmt="github", showindex=False))


if __name__ == "__main__":
    main()
