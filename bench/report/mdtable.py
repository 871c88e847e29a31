"""Cell formatting for the markdown tables of the leaderboard and the cost table (display only, no numbers made).

Usage:
    >>> from bench.report.mdtable import Row, emit, pm
    >>> print(emit(["Method", "Acc"], [Row(["ClipFit", pm(80.0, 1.2)], {1: 80.0}), Row(["CoOp", "—"])], bold=(1,)))
    | Method   |              Acc |
    |:---------|-----------------:|
    | ClipFit  | **80.00 ± 1.20** |
    | CoOp     |                — |
    <BLANKLINE>
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

DASH, STAR, TIE = "—", "\\*", "≈"
LEFT = {"Method", "Dataset", "Protocol", "Error", "Log", "Cell"}      # left-aligned columns; the rest are numbers
OPTIONAL = ("Δ vs reported",)
OVERLAP_LINE = ("Overlapping intervals are not the test: two methods whose intervals overlap can still differ "
                "significantly, because the paired test (≈) uses their agreement on the same seeds and test images.")        # columns dropped from a table where no row has anything in them


@dataclass
class Row:
    """One table row: display cells, numeric values per column (for bold and sorting), columns marked `*`,
    reference row?, and per column: a 95 % interval text, a tie-with-best mark (≈) and a hover text (HTML)."""

    cells: list[str]
    values: dict[int, float] = field(default_factory=dict)
    marks: set[int] = field(default_factory=set)
    ref: bool = False
    ci: dict[int, str] = field(default_factory=dict)
    ties: set[int] = field(default_factory=set)
    tips: dict[int, str] = field(default_factory=dict)
    best: set[int] = field(default_factory=set)
    drill: dict[int, str] = field(default_factory=dict)     # column → id of the cells behind the value (HTML)

    def drop(self, col: int) -> None:
        """Remove column `col`, shifting the per-column marks of the later columns."""
        del self.cells[col]
        for name in ("values", "ci", "tips", "drill"):
            d = getattr(self, name)
            setattr(self, name, {(i - 1 if i > col else i): v for i, v in d.items() if i != col})
        for name in ("marks", "ties", "best"):
            setattr(self, name, {(i - 1 if i > col else i) for i in getattr(self, name) if i != col})


@dataclass
class Table:
    """A table of the leaderboard, rendered as markdown (`Table.markdown`) or HTML (bench.report.html)."""

    heads: list[str]
    rows: list[Row]
    bold: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for col in reversed(range(len(self.heads))):        # a reported-Δ column with nothing in it is left out
            if self.heads[col].startswith(OPTIONAL) and all(r.cells[col] in ("", DASH) for r in self.rows):
                del self.heads[col]
                for r in self.rows:
                    r.drop(col)
                self.bold = tuple(b - 1 if b > col else b for b in self.bold if b != col)
        mark_best(self.rows, self.bold)

    def markdown(self) -> str:
        return emit(self.heads, self.rows)


def mark_best(rows: list[Row], bold: tuple[int, ...]) -> None:
    """Set `Row.best` for the best reproduced value of every `bold` column (equal values all count); a column
    with fewer than two values has no best."""
    for col in bold:
        vals = [r.values[col] for r in rows if not r.ref and present(r.values.get(col))]
        best = max(vals) if len(vals) > 1 else None
        for r in rows:
            if best is not None and not r.ref and present(r.values.get(col)) and math.isclose(r.values[col], best):
                r.best.add(col)


def md_cell(r: Row, i: int) -> str:
    """A cell as markdown: value [interval], bold when best, then ≈ (tied with the best) and * (fewer runs)."""
    text = r.cells[i] + (f" {r.ci[i]}" if r.ci.get(i) else "")
    text = f"**{text}**" if i in r.best else text
    return text + (f" {TIE}" if i in r.ties else "") + (STAR if i in r.marks else "")


def emit(headers: list[str], rows: list[Row], bold: tuple[int, ...] = ()) -> str:
    """Render with tabulate (pipe): best reproduced value per `bold` column in bold, ≈ and `*` marks appended."""
    mark_best(rows, bold)
    cells = [[md_cell(r, i) for i in range(len(r.cells))] for r in rows]
    align = ["left" if h in LEFT else "right" for h in headers]
    return tabulate(cells, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True) + "\n"


def present(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def f2(x: Any) -> str:
    return f"{x:.2f}" if present(x) else DASH


def pm(mean: Any, std: Any) -> str:
    """'80.00 ± 1.23', or '80.00' with one seed, or — when missing."""
    return DASH if not present(mean) else f"{mean:.2f} ± {std:.2f}" if present(std) else f"{mean:.2f}"


def interval(lo: Any, hi: Any) -> str:
    """'[52.9, 54.1]' (one decimal), or '' when there is no interval."""
    return f"[{lo:.1f}, {hi:.1f}]" if present(lo) and present(hi) else ""


def signed(x: Any) -> str:
    return f"{x:+.2f}" if present(x) else DASH


def params(n: Any) -> str:
    if not present(n):
        return DASH
    n = float(n)
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else f"{n:.0f}"


def format_hours(gpu_h: float, cpu_h: float) -> str:
    """'3.20 GPU-h', '0.012 CPU-h', or both when a method ran on both kinds of device."""
    parts = [f"{_num(h)} {label}" for h, label in ((gpu_h, "GPU-h"), (cpu_h, "CPU-h")) if h > 0]
    return " + ".join(parts) if parts else "0 CPU-h"


def _num(hours: float) -> str:
    return f"{hours:.1f}" if hours >= 10 else f"{hours:.2f}" if hours >= 0.1 else f"{hours:.2g}"
