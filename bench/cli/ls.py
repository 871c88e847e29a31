"""`bench ls methods|datasets|suites|backbones`: what bench knows, without importing torch."""

from __future__ import annotations

HELP = "list methods, datasets, suites or backbones"
EPILOG = """examples:
  bench ls methods
  bench ls datasets
  bench ls backbones
"""


def add_arguments(p) -> None:
    p.add_argument("what", choices=["methods", "datasets", "suites", "backbones"])


def execute(args) -> int:
    from tabulate import tabulate

    from bench import cards

    if args.what == "methods":
        rows = [(c.name, c.title, "yes" if c.trains else "no", c.paper) for c in map(cards.method_card, cards.method_names())]
        print(tabulate(rows, headers=["method", "title", "trains", "paper"]))
    elif args.what == "datasets":
        rows = [(d.name, d.title, d.kind, d.folder, d.template, cards.suite_of(d.name) or "")
                for d in map(cards.dataset_card, cards.dataset_names())]
        print(tabulate(rows, headers=["dataset", "title", "kind", "folder", "template", "suite"]))
    elif args.what == "suites":
        rows = [(n, s.get("title", ""), ", ".join(s.get("datasets") or [])) for n, s in cards.suites().items()]
        print(tabulate(rows, headers=["suite", "title", "datasets"], maxcolwidths=[None, 40, 70]))
    else:
        import importlib.util
        from pathlib import Path

        names = sorted(p.stem for p in (Path(importlib.util.find_spec("bench").origin).parent / "model_configs").glob("*.json"))
        spec = importlib.util.find_spec("open_clip")
        oc = sorted(p.stem for p in (Path(spec.origin).parent / "model_configs").glob("*.json")) if spec else []
        print("bench:", ", ".join(names))
        print("open_clip:", ", ".join(oc))
    return 0
