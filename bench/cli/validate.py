"""`bench validate`: check every card, registry name and dataset folder/split file a run would need."""

from __future__ import annotations

HELP = "check cards and the data a run would need; list everything missing with the expected path"
EPILOG = """examples:
  bench validate --data-root $DATA
  bench validate --data-root $DATA --datasets dtd,eurosat
  bench validate --suite imagenet_variants --data-root $DATA
"""


def add_arguments(p) -> None:
    p.add_argument("--data-root", help="folder holding the dataset folders ($DATA)")
    p.add_argument("--datasets", help="comma-separated (default: the suite's)")
    p.add_argument("--suite", default="coop11", help="suite to check when --datasets is not given (default: coop11)")


def execute(args) -> int:
    from pathlib import Path

    from bench import cards
    from bench.data.splits import read_splits
    from bench.errors import BenchError
    from bench.methods import METHODS

    problems: list[str] = []
    for name in cards.method_names():
        try:
            card = cards.method_card(name)
            if name not in METHODS.names():
                problems.append(f"method card {name}: no registered implementation (give the card "
                                "'implementation: package.module:Class')")
            elif card.implementation and not _defines(card.implementation):
                problems.append(f"method card {card.path}: implementation {card.implementation} names no class "
                                "of a module that can be found")
        except BenchError as err:
            problems.append(str(err))
    for problem in problems:                        # the method cards' (the datasets' are printed as they come)
        print(f"PROBLEM  {problem}")
    names = [d.strip() for d in args.datasets.split(",")] if args.datasets else cards.suite(args.suite)["datasets"]
    ok = 0
    for name in names:
        try:
            card = cards.dataset_card(name)
            if args.data_root:
                splits = read_splits(card, Path(args.data_root))
                ok += 1
                print(f"ok       {name}: {len(splits.classnames)} classes, {len(splits.train)} train / "
                      f"{len(splits.val)} val / {len(splits.test)} test")
        except BenchError as err:
            problems.append(str(err))
            print(f"MISSING  {name}: {err}")
    if not args.data_root and not problems:
        print("cards are valid; pass --data-root DIR to check the dataset folders and split files")
    if problems:
        print(f"{len(problems)} problem(s); {ok}/{len(names)} datasets ready")
        return 1
    return 0


def _defines(implementation: str) -> bool:
    """"module:Class" names a module that can be found and a class defined at its top level (read, not imported:
    importing a method imports torch)."""
    import ast
    import importlib.util
    from pathlib import Path

    module, _, name = implementation.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
    except (ImportError, OSError, ValueError):
        return False
    return any(isinstance(node, ast.ClassDef) and node.name == name for node in ast.parse(source).body)
