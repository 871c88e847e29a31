"""`bench compare A B`: paired difference between two methods per dataset, with its 95 % interval and p-value.

Usage:
    $ bench compare clipfit coop
    $ bench compare clipfit zeroshot --protocol base2new --format csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Paired difference A − B per dataset (and average, HM) with its interval and test: same seeds, same test images."
EPILOG = """\
examples:
  bench compare clipfit coop                          # every protocol and K both have, results/
  bench compare clipfit zeroshot --protocol base2new  # zero-shot (K = 0) is compared with every K
  bench compare lora coop --results /scratch/r --shots 16 --datasets dtd,eurosat --format csv

Δ = A − B in points on the runs both have (common seeds, image by image where both cells have predictions.npz);
[lo, hi] is its 95% interval for the expected difference over seeds and test images, p the two-sided p-value of
the paired test (exact McNemar with one seed), p(Holm) the same adjusted by Holm's procedure over every row
printed. "A/B right" lists per seed the images only A got right / only B got right.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.cli.aggregate import add_filters

    parser.add_argument("a", help="method A")
    parser.add_argument("b", help="method B")
    parser.add_argument("--results", type=Path, default=None, help="results root, as for `bench run` (default: results)")
    parser.set_defaults(root=None)
    parser.add_argument("--format", choices=["text", "csv", "json", "md"], default="text", help="output (text)")
    add_filters(parser)


def execute(args: argparse.Namespace) -> int:
    import dataclasses

    from bench.cli._results_arg import results_root
    from bench.cli.aggregate import apply_filters, write_frame
    from bench.errors import BenchError
    from bench.report.collect import load_results
    from bench.report.pairwise import compare_methods

    res = load_results(results_root(args))
    if args.methods:
        raise BenchError("bench compare takes the two methods as arguments, not --methods")
    res = dataclasses.replace(res, frame=apply_filters(res.frame, args))
    table = compare_methods(res.frame, args.a, args.b)
    if args.format != "text":
        sys.stdout.write(write_frame(table, None, args.format))
        return 0
    sys.stdout.write(render_text(table, args.a, args.b))
    return 0


def render_text(table, a: str, b: str) -> str:
    from tabulate import tabulate

    out = []
    for (bb, pt, protocol, k), sec in table.groupby(["backbone", "pretrained", "protocol", "shots"], sort=False):
        rows = [[r.dataset, r.eval, r.images, r.discordant or "—", f"{r.a:.2f}", f"{r.b:.2f}", f"{r.delta:+.2f}",
                 f"[{r.lo:+.2f}, {r.hi:+.2f}]", f"{r.p:.3g}", f"{r.p_holm:.3g}", r.seeds,
                 "yes" if r.image_paired else "no"] for r in sec.itertuples()]
        out.append(f"{a} − {b} · {bb}/{pt} · {protocol} · K={k}\n")
        out.append(tabulate(rows, headers=["dataset", "eval", "images", f"{a}/{b} right, per seed", a, b, "Δ",
                                           "95% CI", "p", "p(Holm)", "seeds", "image-paired"],
                            tablefmt="simple", colalign=("left", "left") + ("right",) * 10,
                            disable_numparse=True) + "\n\n")
    out.append(f"p(Holm): Holm's step-down adjustment over all {len(table)} rows above. Tests: "
               + "; ".join(sorted(set(table["test"]))) + ".\n")
    few = int(table["seeds"].min()) if len(table) else 0
    if few < 3:
        out.append(f"warning: {few} seed(s) in some comparison: " + (
            "with one seed the test compares these two runs on these images, not the two methods (a seed can "
            "change a method's accuracy by points); run more seeds for a claim about the methods.\n" if few <= 1 else
            "the seed variance rests on 1 degree of freedom, so intervals are wide; 3 or more seeds are needed for "
            "a seed-level claim of useful power.\n"))
    return "".join(out)
