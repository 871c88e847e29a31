"""The evaluation protocols as objects: how a grid lays out cells, which evaluations a cell runs, which summary
tables and leaderboard section the reports make, and what the command line must give (no torch, no pandas).

Usage:
    >>> from bench.protocols import protocol
    >>> p = protocol("xd")
    >>> p.layout(datasets=["imagenet", "dtd"], source=None, targets=None)     # [("imagenet", ["dtd"])]
    >>> p.own_evals, p.tables, p.transfer          # ("source",), ("xd",), True

fewshot (all classes, K ∈ shots), base2new (K = 16 unless --shots; train on the base half of the classes, test
base and new; HM of the two), xd (train on the source — ImageNet — and test on the other datasets), dg (train on
ImageNet, test on V2/Sketch/A/R). The protocols follow CoOp/CoCoOp (https://github.com/KaiyangZhou/CoOp,
https://arxiv.org/abs/2203.05557).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import BenchError, did_you_mean

DG_TARGETS = ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str                      # the leaderboard section's heading (and the HTML's protocol of a section)
    own_evals: tuple[str, ...]      # evaluations of a cell on its training dataset (targets come after)
    tables: tuple[str, ...]         # summary tables (bench.report.aggregate.summaries) it makes
    default_shots: tuple[int, ...]  # K when neither --shots nor the grid file give them
    suite_shots: bool = False       # a suite's `shots` apply (only few-shot: the others train with 16)
    class_split: bool = False       # trained on the base half of the classes; own_evals are (base, new), with HM
    transfer: bool = False          # trained on one source and evaluated on targets too (a `target_avg`)
    default_source: str | None = None           # transfer: the training dataset without --source
    default_targets: tuple[str, ...] | None = None   # transfer without --targets (None: the other datasets)
    targets_replace_datasets: bool = False      # --targets alone is enough (no --datasets needed)
    board_position: int = 0         # order of the sections in the leaderboard

    def __post_init__(self) -> None:
        if (self.class_split and len(self.own_evals) != 2) or (self.transfer and (len(self.own_evals) != 1
                                                                               or not self.default_source)):
            raise BenchError(f"protocol '{self.name}': a class split has two own evaluations (base, new), a "
                             "transfer protocol one (its source) and a default source")

    @property
    def averaged(self) -> bool:
        """Its datasets are averaged into one figure (an `_avg` table; `compare`'s 'average' rows)."""
        return not self.transfer

    def check_datasets(self, datasets: list[str], targets: list[str] | None) -> None:
        """A one-line error when a grid of this protocol has nothing to train on (transfer protocols have a default
        source; xd evaluates the grid's other datasets unless --targets names them)."""
        if datasets or self.transfer and (targets or not self.targets_replace_datasets):
            return
        from bench import cards

        raise BenchError(f"no datasets to run: pass --datasets a,b or --suite ({', '.join(cards.suites())})"
                         + (" or --targets" if self.targets_replace_datasets else ""))

    def layout(self, datasets: list[str], source: str | None,
               targets: list[str] | None) -> list[tuple[str, list[str]]]:
        """(training dataset, evaluated targets) pairs: one per dataset, or the source and its targets."""
        if not self.transfer:
            return [(d, []) for d in datasets]
        source = source or self.default_source
        if targets is None:
            targets = list(self.default_targets) if self.default_targets is not None else [
                d for d in datasets if d != source]
        return [(source, list(targets))]

    def evals(self, targets: list[str]) -> list[str]:
        """Names of a cell's evaluations, in the order it runs them (result.json's `metrics`)."""
        return list(self.own_evals) + list(targets)


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("fewshot", "Few-shot classification", ("all",), ("fewshot", "fewshot_avg"), (1, 2, 4, 8, 16),
             suite_shots=True, board_position=1),
    Protocol("base2new", "Base-to-new generalisation", ("base", "new"), ("base2new", "base2new_avg"), (16,),
             class_split=True, board_position=0),
    Protocol("xd", "Cross-dataset transfer", ("source",), ("xd",), (16,), transfer=True,
             default_source="imagenet", targets_replace_datasets=True, board_position=2),
    Protocol("dg", "Domain generalisation", ("source",), ("dg",), (16,), transfer=True,
             default_source="imagenet", default_targets=DG_TARGETS, board_position=3),
)}
NAMES = tuple(PROTOCOLS)                    # the order of `--protocol`'s choices and of the summary tables
DEFAULT = "fewshot"


def protocol(name: str) -> Protocol:
    """The protocol called `name` (a one-line error naming the close ones otherwise)."""
    if name not in PROTOCOLS:
        raise did_you_mean("protocol", name, NAMES)
    return PROTOCOLS[name]


def in_board_order() -> list[Protocol]:
    """The protocols in the leaderboard's order of sections (base-to-new first)."""
    return sorted(PROTOCOLS.values(), key=lambda p: p.board_position)


def of_heading(heading: str) -> str:
    """The protocol a leaderboard section heading opens ('' for the sections every protocol shares)."""
    return next((p.name for p in PROTOCOLS.values() if heading.startswith(p.title)), "")


def table_names() -> list[str]:
    """Every summary table the protocols make, in NAMES order."""
    return [t for p in PROTOCOLS.values() for t in p.tables]


def transfer_protocol(name: str) -> Protocol:
    """`name` as a transfer protocol (xd, dg), for the tables only they have."""
    p = PROTOCOLS.get(name)
    if p is None or not p.transfer:
        raise BenchError(f"transfer tables are for protocol {' or '.join(n for n in NAMES if PROTOCOLS[n].transfer)}"
                         f", not '{name}'")
    return p
