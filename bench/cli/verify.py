"""`bench verify`: check that every result.json in a results tree is what it claims to be; one line per problem."""

from __future__ import annotations

HELP = "check a results tree: JSON, schema, cell id = hash of config, artifact sha256, leftover temp files/checkpoints"
EPILOG = """examples:
  bench verify                       # the default tree, results/
  bench verify /scratch/me/results   # e.g. after copying results from another machine
  bench verify --results results --no-hashes

Each problem is one line `<path>: <problem>`; notes (resumable checkpoints, stale lock files) start with `note:`
and do not count. Exit status 1 when any problem is found, 0 when the tree is clean.
"""


def add_arguments(p) -> None:
    from bench.cli._results_arg import add_results_arguments

    add_results_arguments(p)
    p.add_argument("--no-hashes", action="store_true", help="skip hashing artifacts (faster on large trees)")


def execute(args) -> int:
    from bench.cli._results_arg import results_root
    from bench.results import verify_tree

    root = results_root(args)
    report = verify_tree(root, hashes=not args.no_hashes)
    for finding in report.findings:
        print(finding)
    problems = len(report.problems)
    notes = len(report.findings) - problems
    verdict = f"{problems} problem{'s' if problems != 1 else ''}" if problems else "clean"
    print(f"{report.results} result{'s' if report.results != 1 else ''} checked under {root}: {verdict}"
          + (f" ({notes} note{'s' if notes != 1 else ''})" if notes else ""))
    return 1 if problems else 0
