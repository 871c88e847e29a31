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

DASH, STAR = "—", "\\*"
LEFT = {"Method", "Dataset", "Protocol", "Error", "Log", "Cell"}      # left-aligned columns; the rest are numbers


@dataclass
class Row:
    """One table row: display cells, numeric values per column (for bold), columns marked `*`, reference?"""

    cells: list[str]
    values: dict[int, float] = field(default_factory=dict)
    marks: set[int] = field(default_factory=set)
    ref: bool = False


def emit(headers: list[str], rows: list[Row], bold: tuple[int, ...] = ()) -> str:
    """Render with tabulate (pipe): best reproduced value per `bold` column in bold, `*` marks appended."""
    for col in bold:
        vals = [r.values[col] for r in rows if not r.ref and present(r.values.get(col))]
        best = max(vals) if vals else None
        for r in rows:
            if best is not None and not r.ref and present(r.values.get(col)) and math.isclose(r.values[col], best):
                r.cells[col] = f"**{r.cells[col]}**"
    cells = [[c + (STAR if i in r.marks else "") for i, c in enumerate(r.cells)] for r in rows]
    align = ["left" if h in LEFT else "right" for h in headers]
    return tabulate(cells, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True) + "\n"


def present(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def f2(x: Any) -> str:
    return f"{x:.2f}" if present(x) else DASH


def pm(mean: Any, std: Any) -> str:
    """'80.00 ± 1.23', or '80.00' with one seed, or — when missing."""
    return DASH if not present(mean) else f"{mean:.2f} ± {std:.2f}" if present(std) else f"{mean:.2f}"


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
