"""`bench aggregate`: read a results tree into one tidy table (or the summary tables) as csv, json or markdown.

Usage:
    $ bench aggregate results -o results/aggregate.csv
    $ bench aggregate results --format md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError

HELP = "Aggregate result.json files into a tidy table (one row per cell × evaluation) or summary tables."
EPILOG = """\
examples:
  bench aggregate                                   # results/ → long CSV on stdout
  bench aggregate results -o results/aggregate.csv  # write the long table to a file
  bench aggregate results --format md               # few-shot / base-to-new / xd / dg / cost summaries
  bench aggregate results --table base2new_avg --format json
  bench aggregate --results /scratch/me/results -o cells.csv
"""
TABLES = ["long", "fewshot", "fewshot_avg", "base2new", "base2new_avg", "xd", "dg", "cost", "summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.cli._results_arg import add_results_arguments

    add_results_arguments(parser)
    parser.add_argument("-o", "--output", metavar="PATH", help="write here instead of stdout")
    parser.add_argument("--format", choices=["csv", "json", "md"], default="csv", help="output format (csv)")
    parser.add_argument("--table", choices=TABLES, default=None,
                        help="which table: long (default for csv/json), a summary table, or summary (all "
                             "summaries; default for md)")
    parser.add_argument("--strict", action="store_true", help="fail on the first malformed file instead of skipping")


def execute(args: argparse.Namespace) -> int:
    from bench.aggregate import summaries
    from bench.cli._results_arg import results_root
    from bench.collect import load_results

    root = results_root(args)
    res = load_results(root, strict=args.strict)
    table = args.table or ("summary" if args.format == "md" else "long")
    out = Path(args.output) if args.output else None
    if table == "long":
        text = write_frame(res.frame, out, args.format)
    else:
        tables = summaries(res)
        if table == "summary":
            if args.format != "md":
                raise BenchError("--table summary needs --format md; pick one summary table for csv/json")
            text = "\n".join(f"## {name}\n\n{write_frame(frame, None, 'md')}" for name, frame in tables.items())
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text, encoding="utf-8")
        elif table not in tables:
            raise BenchError(f"table '{table}' has no data in {root}; available: "
                             f"{', '.join(['long', *tables]) }")
        else:
            text = write_frame(tables[table], out, args.format)
    if out is None:
        sys.stdout.write(text)
    c = res.completeness()
    print(f"aggregated {c['done']}/{c['expected']} planned cells complete, {c['failed']} failed, {c['missing']} "
          f"missing, {c['malformed']} malformed skipped" + (f"; wrote {out}" if out else ""), file=sys.stderr)
    return 0


def write_frame(frame: Any, out: Path | None, fmt: str) -> str:
    """Render a frame as csv, json (records) or md (tabulate pipe); write it to `out` or return the text."""
    if fmt == "csv":
        text = frame.to_csv(index=False)
    elif fmt == "json":
        text = frame.to_json(orient="records", indent=1, double_precision=10) + "\n"
    elif fmt == "md":
        from tabulate import tabulate
        text = tabulate(frame, headers="keys", tablefmt="pipe", showindex=False, floatfmt=".2f") + "\n"
    else:
        raise BenchError(f"format '{fmt}' is unknown; valid: csv, json, md")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return text
