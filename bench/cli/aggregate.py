"""`bench aggregate`: read a results tree into one tidy table (or the summary tables) as csv, json or markdown.

Usage:
    $ bench aggregate results -o results/aggregate.csv
    $ bench aggregate results --format md
    $ bench aggregate results --per-image --methods clipfit,coop -o per_image.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.protocols import table_names

HELP = "Aggregate result.json files into a tidy table (one row per cell × evaluation) or summary tables."
EPILOG = """\
examples:
  bench aggregate                                   # results/ → long CSV on stdout
  bench aggregate results -o results/aggregate.csv  # write the long table to a file
  bench aggregate results --format md               # few-shot / base-to-new / xd / dg / cost summaries
  bench aggregate results --table base2new_avg --format json
  bench aggregate results --per-image -o per_image.csv   # one row per cell × evaluation × test image
  bench aggregate --per-image --methods coop --datasets dtd --shots 16 --format json
  bench aggregate --results /scratch/me/results -o cells.csv
"""
TABLES = ["long", *table_names(), "cost", "summary"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench.cli._results_arg import add_results_arguments

    add_results_arguments(parser)
    parser.add_argument("-o", "--output", metavar="PATH", help="write here instead of stdout")
    parser.add_argument("--format", choices=["csv", "json", "md"], default="csv", help="output format (csv)")
    parser.add_argument("--table", choices=TABLES, default=None,
                        help="which table: long (default for csv/json), a summary table, or summary (all "
                             "summaries; default for md)")
    parser.add_argument("--strict", action="store_true", help="fail on the first malformed file instead of skipping")
    parser.add_argument("--per-image", action="store_true",
                        help="the per-image predictions instead: cell keys, eval, image, label, pred, correct, p_true "
                             "(from each cell's predictions.npz)")
    add_filters(parser)


def add_filters(parser: argparse.ArgumentParser) -> None:
    """--methods/--datasets/--protocol/--shots/--seeds/--backbone: which cells (shared with `bench compare`)."""
    parser.add_argument("--methods", help="only these methods (comma-separated)")
    parser.add_argument("--datasets", help="only these datasets (comma-separated)")
    parser.add_argument("--protocol", help="only this protocol (fewshot, base2new, xd, dg)")
    parser.add_argument("--shots", help="only these K (comma-separated)")
    parser.add_argument("--seeds", help="only these seeds (comma-separated)")
    parser.add_argument("--backbone", help="only this backbone, as tables show it (e.g. ViT-B-16-quickgelu)")


def apply_filters(frame: Any, args: argparse.Namespace) -> Any:
    """The rows of `frame` that the filter flags select; a filter matching nothing is a one-line error."""
    def ints(text: str, flag: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise BenchError(f"{flag} expects comma-separated integers, got '{text}'") from None

    for flag, col, conv in (("methods", "method", None), ("datasets", "dataset", None),
                            ("protocol", "protocol", None), ("shots", "shots", ints), ("seeds", "seed", ints),
                            ("backbone", "backbone", None)):
        value = getattr(args, flag, None)
        if not value:
            continue
        wanted = conv(value, f"--{flag}") if conv else [v.strip() for v in value.split(",") if v.strip()]
        if col == "shots" and "zeroshot" in set(frame["method"]):
            wanted = [*wanted, 0]                      # zero-shot (K = 0) is every K's baseline
        kept = frame[frame[col].isin(wanted) | (frame["base_method"].isin(wanted) if col == "method" else False)]
        if kept.empty:
            have = ", ".join(map(str, sorted(set(frame[col].dropna()))[:20])) or "none"
            raise BenchError(f"--{flag} {value} matches no result; available: {have}")
        frame = kept
    return frame


def execute(args: argparse.Namespace) -> int:
    from bench.cli._results_arg import results_root
    from bench.report.aggregate import summaries
    from bench.report.collect import load_results

    root = results_root(args)
    res = load_results(root, strict=args.strict)
    table = args.table or ("summary" if args.format == "md" else "long")
    out = Path(args.output) if args.output else None
    if args.per_image:
        from bench.report.predictions import per_image_frame

        if args.table:
            raise BenchError("--per-image is its own table; drop --table")
        frame = per_image_frame(apply_filters(res.frame, args))
        text = write_frame(frame, out, args.format)
    elif table == "long":
        text = write_frame(apply_filters(res.frame, args), out, args.format)
    else:
        import dataclasses

        tables = summaries(dataclasses.replace(res, frame=apply_filters(res.frame, args)))
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
