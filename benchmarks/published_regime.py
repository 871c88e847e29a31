"""What the published protocol choices do: published minus default, per method, with 95 % intervals, on the mini world.

Usage:
    python benchmarks/published_regime.py                                  # the full table (GPU: minutes; 2 CPU cores: hours)
    python benchmarks/published_regime.py --keep /tmp/published            # the same, resumable: a rerun skips done cells
    python benchmarks/published_regime.py --methods coop,tip_adapter_f --datasets mini_shapes,mini_digits --shots 4
    python benchmarks/published_regime.py --tiny                           # the tiny world, bench-tiny: a smoke run

Four variants of the same cells (the mini suite's budgets): `default`; `published` (`--regime published`);
`pure fp16 alone` (default regime, `--set precision=pure_fp16`), run only for the methods whose published
precision is pure fp16 (not CLIP-LoRA: its published precision is fp16 autocast, so its `published` column is
its precision alone); `test-set selection alone` (`--regime published --set precision=auto`), run only for the
methods that select on the test set (in the mini world, which has no ImageNet, Tip-Adapter-F alone). A variant
that changes nothing for a method shows "(none)". One `bench run` per setting and variant, all variants of a
setting before the next setting, so a run stopped early (rerun with the same --keep to go on: completed cells
are skipped) still compares its first settings. For each method and setting (few-shot K = 1, 4, 16: accuracy
averaged over the datasets; base-to-new K = 16: HM of the averaged Base and New, or Base where the method
cannot name new classes) it prints each variant minus default, with a 95 % paired percentile bootstrap
interval over the (dataset, seed) cells (2,000 resamples; each resample redraws cells and recomputes the
statistic from the drawn cells of both runs; tests/test_regime.py checks its coverage by simulation). On a CPU
the default regime computes in fp32, on a GPU under bf16 autocast: the header says which. Exits non-zero if
any cell failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

METHODS = "coop,cocoop,kgcoop,maple,promptsrc,clipfit,tip_adapter_f,lora"
MINI = "mini_shapes,mini_colors,mini_textures,mini_digits,mini_combos,mini_sketches"
VARIANTS = {                      # name: extra `bench run` arguments
    "default": [],
    "published": ["--regime", "published"],
    "pure fp16 alone": ["--set", "precision=pure_fp16"],
    "test-set selection alone": ["--regime", "published", "--set", "precision=auto"],
}


def applies(variant: str, method: str, datasets: list[str]) -> bool:
    """Whether `variant` changes anything for `method` (a variant that does not is neither run nor shown): pure fp16
    alone for the methods whose published precision is pure fp16 (not CLIP-LoRA, whose published precision is fp16
    autocast, so its published column is its precision alone); test-set selection alone for the methods that select
    on the test set on one of `datasets`."""
    from bench.regime import regime_settings, selects_on_test

    published = [regime_settings(method, d, "published") for d in datasets]
    if variant == "pure fp16 alone":
        return any(s.get("precision") == "pure_fp16" for s in published)
    if variant == "test-set selection alone":
        return any(selects_on_test(s) for s in published)
    return True


def cells(root: Path) -> dict[tuple, dict[str, float]]:
    """(protocol, method, shots, dataset, seed) → {eval: acc} of the completed cells under `root`."""
    from bench.results import ResultStore

    out = {}
    for _, res in ResultStore(root).iter_results():
        c = res["config"]
        if res["status"] == "completed":
            out[(c["protocol"], c["method"], c["shots"], c["dataset"], c["seed"])] = {
                k: v["acc"] for k, v in res["metrics"].items()}
    return out


def statistic(protocol: str, rows: list[dict[str, float]]) -> float:
    """Few-shot: mean accuracy; base-to-new: HM of the mean Base and mean New (the CoCoOp convention), or the mean
    Base where the method cannot name new classes (Tip-Adapter)."""
    if protocol == "fewshot":
        return float(np.mean([r["all"] for r in rows]))
    if not all("new" in r for r in rows):
        return float(np.mean([r["base"] for r in rows]))
    base, new = np.mean([r["base"] for r in rows]), np.mean([r["new"] for r in rows])
    return float(2 * base * new / (base + new)) if base + new else 0.0


def paired_interval(protocol: str, a: list[dict], b: list[dict], resamples: int = 2000, seed: int = 0):
    """(b − a, low, high): the statistic's difference and its 95 % percentile interval, cells resampled in pairs."""
    rng = np.random.default_rng(seed)
    n = len(a)
    diffs = []
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        diffs.append(statistic(protocol, [b[i] for i in pick]) - statistic(protocol, [a[i] for i in pick]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return statistic(protocol, b) - statistic(protocol, a), float(lo), float(hi)


def table(results: dict[str, dict], methods: list[str], datasets: list[str],
          settings: list[tuple[str, int]]) -> list[list[str]]:
    rows = []
    for method in methods:
        for protocol, shots in settings:
            keys = sorted(k for k in results["default"] if k[:3] == (protocol, method, shots))
            base = [results["default"][k] for k in keys]
            b2n = "HM" if all("new" in r for r in base) else "Base"
            row = [method, f"few-shot K={shots}" if protocol == "fewshot" else f"base-to-new K={shots} ({b2n})"]
            row.append(f"{statistic(protocol, base):.2f}" if keys else "—")
            for variant in list(VARIANTS)[1:]:
                if not applies(variant, method, datasets):
                    row.append("(none)")
                    continue
                paired = [k for k in keys if k in results[variant]]
                if len(paired) < 2:
                    row.append("—")
                    continue
                d, lo, hi = paired_interval(protocol, [results["default"][k] for k in paired],
                                            [results[variant][k] for k in paired])
                row.append(f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]")
            rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=METHODS)
    p.add_argument("--datasets", default=MINI)
    p.add_argument("--shots", default="1,4,16", help="few-shot K values")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--no-base2new", action="store_true")
    p.add_argument("--tiny", action="store_true", help="the tiny world and bench-tiny (a smoke run of the script)")
    p.add_argument("--keep", type=Path, help="results trees here (reruns skip completed cells)")
    args = p.parse_args()
    from tabulate import tabulate

    from bench.cli import main as bench

    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-published-"))
    world = []
    if args.tiny:
        from bench.mini.world import TINY, ensure_world

        w = ensure_world(base / "cache", seed=0, config=TINY)
        args.datasets = ",".join(w.datasets)
        world = ["--data-root", str(w.data_root), "--backbone", "bench-tiny", "--pretrained", "none"]
    # One bench run per setting and variant, the variants of a setting together, so that a run stopped early
    # (rerun with --keep to go on) leaves every variant of its first settings to compare.
    settings = [("fewshot", int(k)) for k in args.shots.split(",")]
    if not args.no_base2new:
        settings.append(("base2new", 16 if not args.tiny else 2))
    datasets, methods = args.datasets.split(","), args.methods.split(",")
    results, failed, start = {v: {} for v in VARIANTS}, 0, time.monotonic()
    for protocol, shots in settings:
        for variant, extra in VARIANTS.items():
            run_methods = [m for m in methods if applies(variant, m, datasets)]
            if not run_methods:
                continue
            root = base / variant.replace(" ", "_")
            code = bench(["run", "--suite", "mini", *world, "--methods", ",".join(run_methods), "--datasets",
                          args.datasets, "--seeds", args.seeds, "--results", str(root), "--no-leaderboard",
                          "--protocol", protocol, "--shots", str(shots), *extra])
            failed += code != 0
            results[variant] = cells(root)
    wall = time.monotonic() - start
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"\nWhat the published protocol choices do (variant minus default; {'tiny' if args.tiny else 'mini'} "
          f"world, {device}: default = {'bf16 autocast' if device == 'cuda' else 'fp32'}, fp32 master weights; "
          f"95 % paired bootstrap over {len(datasets)} datasets × {len(args.seeds.split(','))} seeds; "
          f"accuracy in %; {wall:.0f} s)\n")
    print(tabulate(table(results, methods, datasets, settings),
                   headers=["method", "setting", "default", *[f"{v} − default" for v in list(VARIANTS)[1:]]]))
    print(f"\nresults: {base}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
