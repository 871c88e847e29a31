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
        rows = [(c.name, c.title, _count(c.trainable), c.paper, c.code + (f" (extends {c.extends})" if c.extends else ""))
                for c in map(cards.method_card, cards.method_names())]
        print(tabulate(rows, headers=["method", "title", "trainable (ViT-B/16)", "paper", "code"],
                       colalign=("left", "left", "right", "left", "left"), maxcolwidths=[None, 24, None, 48, 40],
                       disable_numparse=True))
    elif args.what == "datasets":
        rows = [(d.name, d.title, d.kind, d.folder, d.template, cards.suite_of(d.name) or "")
                for d in map(cards.dataset_card, cards.dataset_names())]
        print(tabulate(rows, headers=["dataset", "title", "kind", "folder", "template", "suite"]))
    elif args.what == "suites":
        rows = [(n, s.get("title", ""), ", ".join(s.get("datasets") or [])) for n, s in cards.suites().items()]
        print(tabulate(rows, headers=["suite", "title", "datasets"], maxcolwidths=[None, 40, 70]))
    else:
        from bench.backbone_spec import CONFIG_DIR, list_backbones

        own = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        print("bench:", ", ".join(own))
        print("open_clip:", ", ".join(n for n in list_backbones() if n not in own))
        print("also: path/to/arch.json (an open_clip model config, named by its file stem), local-dir:DIR "
              "(open_clip_config.json + weights), hf-hub:org/repo")
        print("activation: QuickGELU where the weights were trained with it (tag config, OpenAI release files); "
              "--activation quick_gelu|gelu overrides")
    return 0


def _count(trainable) -> str:
    """A card's trainable count as printed: 46,080; a formula as written; — when the card gives none."""
    if isinstance(trainable, bool) or trainable is None:
        return "—"
    return f"{trainable:,}" if isinstance(trainable, int) else str(trainable)
