"""The `bench` command line: one module per verb, imported only when that verb runs.

Usage:
    $ bench --help
    $ bench ls methods
    $ bench run --methods clipfit,coop --shots 1,4,16

Each verb module defines `HELP` (one line), `EPILOG` (copy-paste examples), `add_arguments(parser)` and
`execute(args) -> int`. Modules import torch/open_clip/pandas inside `execute` only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from bench import __version__
from bench.errors import BenchError

VERBS = ["ls", "validate", "plan", "run", "status", "verify", "aggregate", "leaderboard", "compare", "analyze",
         "world", "worker"]

DESCRIPTION = """\
bench: benchmark parameter-efficient fine-tuning of CLIP (ClipFit, CoOp, CLIP-Adapter, LoRA, full FT, ...).

With no --backbone/--datasets/--data-root, `bench run` uses the offline mini world (a tiny CLIP that bench
pretrains itself plus a miniature CoOp-layout suite). The real benchmark is one flag away:
  bench run --suite coop11 --data-root $DATA --backbone ViT-B-16 --pretrained openai
"""


def setup_logging() -> None:
    """Console shows WARNING and up (BENCH_LOG_LEVEL overrides); each cell's log.txt gets INFO (see bench.cell)."""
    root = logging.getLogger()
    if any(getattr(h, "_bench", False) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setLevel(os.environ.get("BENCH_LOG_LEVEL", "WARNING").upper())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler._bench = True
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        module = _verb_module(verb)
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP, epilog=module.EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
    return parser


def _verb_module(verb: str):
    return importlib.import_module(f"bench.cli.{verb}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 0
    setup_logging()
    try:
        return int(_verb_module(args.verb).execute(args) or 0)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
