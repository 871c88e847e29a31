"""`bench leaderboard`: write LEADERBOARD.md (plus plots), or the same tables as csv/json.

Usage:
    $ bench leaderboard results
    $ bench leaderboard results --format json -o leaderboard.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Write LEADERBOARD.md (ranked tables, reported reference rows, plots) for a results tree."
EPILOG = """\
examples:
  bench leaderboard                                  # results/LEADERBOARD.md + results/plots/*.png
  bench leaderboard results -o docs/LEADERBOARD.md --no-plots
  bench leaderboard results --format json            # results/leaderboard.json (machine-readable)
  bench leaderboard results --format csv -o board.csv
  bench leaderboard --results /scratch/me/results    # the --results root of `bench run`
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.cli._results_arg import add_results_arguments

    add_results_arguments(parser)
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="output file (default: <results>/LEADERBOARD.md, leaderboard.csv or leaderboard.json)")
    parser.add_argument("--format", choices=["md", "csv", "json"], default="md", help="output format (md)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (md only)")


def execute(args: argparse.Namespace) -> int:
    from bench.cli._results_arg import results_root
    from bench.leaderboard import write_leaderboard

    out = write_leaderboard(results_root(args), Path(args.output) if args.output else None, args.format,
                            plots=not args.no_plots)
    print(f"wrote {out}", file=sys.stderr)
    return 0
