"""The results root of the read verbs (status, verify, leaderboard, aggregate, analyze): `bench VERB [RESULTS]`
or `bench VERB --results RESULTS`, as `bench run --results` writes it (no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import BenchError


def add_results_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", nargs="?", type=Path, default=None, metavar="RESULTS",
                   help="results root (default: results, or --results)")
    p.add_argument("--results", type=Path, default=None, help="results root, as for `bench run` (default: results)")


def results_root(args: argparse.Namespace) -> Path:
    """The one results root given (positional or --results; default `results`), which must be a folder."""
    if args.root is not None and args.results is not None and args.root != args.results:
        raise BenchError(f"two results roots given ({args.root} and --results {args.results}); pass one")
    root = args.root or args.results or Path("results")
    if not root.is_dir():
        raise BenchError(f"results folder {root} does not exist; pass the folder that bench run --results wrote")
    return root
