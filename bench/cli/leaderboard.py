"""`bench leaderboard`: write LEADERBOARD.md (plus plots, and with --html LEADERBOARD.html), or csv/json.

Usage:
    $ bench leaderboard results
    $ bench leaderboard results --html
    $ bench leaderboard results --format json -o leaderboard.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Write LEADERBOARD.md (ranked tables with intervals and ties, reported rows, plots); --html adds a web page."
EPILOG = """\
examples:
  bench leaderboard                                  # results/LEADERBOARD.md + results/plots/*.png
  bench leaderboard results -o docs/LEADERBOARD.md --no-plots
  bench leaderboard --html                           # also results/LEADERBOARD.html: one self-contained page
  bench leaderboard results --format json            # results/leaderboard.json (machine-readable)
  bench leaderboard results --format csv -o board.csv
  bench leaderboard --results /scratch/me/results    # the --results root of `bench run`
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.cli._results_arg import add_results_arguments

    add_results_arguments(parser)
    parser.add_argument("-o", "--output", metavar="PATH",
                        help="output file (default: <results>/LEADERBOARD.md, leaderboard.csv or leaderboard.json)")
    parser.add_argument("--format", choices=["md", "html", "csv", "json"], default="md", help="output format (md)")
    parser.add_argument("--html", action="store_true",
                        help="also write LEADERBOARD.html beside LEADERBOARD.md (sortable tables, embedded plots, "
                             "no network needed)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (md and html)")


def execute(args: argparse.Namespace) -> int:
    from bench.cli._results_arg import results_root
    from bench.report.leaderboard import write_leaderboard

    out = write_leaderboard(results_root(args), Path(args.output) if args.output else None, args.format,
                            plots=not args.no_plots, html=args.html)
    print(f"wrote {out}" + (f" and {out.with_name('LEADERBOARD.html')}" if args.html and args.format == "md" else ""),
          file=sys.stderr)
    return 0
