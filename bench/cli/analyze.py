"""`bench analyze`: where fine-tuning changes CLIP — parameter change per layer and representation drift per block.

Usage:
    $ bench analyze results --methods clipfit,lora
    $ bench analyze results --data-root $DATA --datasets dtd --shots 16 --out results/analysis-dtd
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "where fine-tuning changes CLIP: per-layer parameter change and per-block representation drift (CKA)"
EPILOG = """\
examples:
  bench analyze                                          # results/ on the mini world → results/analysis/ANALYSIS.md
  bench analyze results --methods clipfit,coop,lora --shots 16
  bench analyze results --data-root $DATA --datasets oxford_pets,dtd --samples 128 --out /tmp/analysis
  bench analyze results --protocol base2new --samples 0  # parameter change only, no forward passes
  bench analyze --results /scratch/me/results --samples 0
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench.cli._grid_args import int_list, name_list
    from bench.cli._results_arg import add_results_arguments
    from bench.protocols import NAMES as PROTOCOLS

    add_results_arguments(p)
    p.add_argument("--methods", type=name_list, help="comma-separated methods (default: every trained method)")
    p.add_argument("--datasets", type=name_list, help="comma-separated datasets (default: all)")
    p.add_argument("--protocol", choices=PROTOCOLS, help="only cells of this protocol (default: all)")
    p.add_argument("--shots", type=int_list, help="only these K values, e.g. 4,16 (default: all)")
    p.add_argument("--data-root", type=Path, help="the data root the cells were trained from (default: the mini world)")
    p.add_argument("--samples", type=int, default=64,
                   help="test images per dataset for representation drift, drawn with seed 0 (0 = skip; default 64)")
    p.add_argument("--out", type=Path, help="output folder (default: RESULTS/analysis)")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")


def execute(args: argparse.Namespace) -> int:
    from bench.analysis.analyze import analyze
    from bench.cli._results_arg import results_root

    report = analyze(results_root(args), data_root=args.data_root, methods=args.methods, datasets=args.datasets,
                     protocol=args.protocol, shots=args.shots, samples=args.samples, out=args.out, device=args.device)
    print(f"analysed {len(report.cells)} cell(s); wrote {report.path} and {len(report.figures)} figure(s)")
    for note in report.skipped[:5]:
        print(f"skipped {note}")
    if len(report.skipped) > 5:
        print(f"... and {len(report.skipped) - 5} more skipped (listed in {report.path.name})")
    return 0
