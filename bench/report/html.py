"""LEADERBOARD.html: the leaderboard's blocks rendered by a Jinja2 template into one self-contained page.

Usage:
    >>> from bench.report.leaderboard import write_leaderboard
    >>> write_leaderboard(Path("results"), html=True)        # results/LEADERBOARD.md + results/LEADERBOARD.html

The page needs no network: CSS and JavaScript are inline (templates/leaderboard.css, leaderboard.js, plain JS),
plots are embedded as base64 data URIs. A researcher can filter by protocol, method and dataset or by any text;
tables sort by clicking a header (reference rows move with their method; every header has a description on
hover); intervals are shown (a checkbox hides them, `?ci=0` on load); clicking a value lists the runs behind it
(per seed: accuracy, images, cell, result.json with its config, log); every table downloads as CSV or JSON.
`?selftest=1` makes the page exercise all this and record what it saw in `<body data-selftest>`, so a headless
browser (`chromium --headless --dump-dom`) can check it (tests/test_html.py).
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

from bench.report.mdtable import OVERLAP_LINE, STAR, TIE, Row, Table

TEMPLATES = Path(__file__).resolve().parent / "templates"
_INLINE = [(re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"), (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
           (re.compile(r"(?<![\w*\\])\*(?!\s)([^*]+?)\*(?!\w)"), r"<em>\1</em>"),
           (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'), (re.compile(r"\\\*"), "*")]
_HEADING = re.compile(r"^(#{1,4}) (.*)$")


def inline(text: str) -> Any:
    """A line of the leaderboard's markdown as safe HTML: escaped, then bold, code, italics, links."""
    from markupsafe import Markup, escape

    html = str(escape(text))
    for pattern, repl in _INLINE:
        html = pattern.sub(repl, html)
    return Markup(html)


def _slug(text: str, seen: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "section"
    slug, i = base, 2
    while slug in seen:
        slug, i = f"{base}-{i}", i + 1
    seen.add(slug)
    return slug


def _value(x: Any) -> str:
    return repr(float(x)) if isinstance(x, (int, float)) and math.isfinite(float(x)) else ""


def _cell(row: Row, i: int) -> dict[str, Any]:
    cls = [c for c, on in (("best", i in row.best), ("tie", i in row.ties), ("partial", i in row.marks)) if on]
    return {"text": inline(row.cells[i]), "v": _value(row.values.get(i)), "tip": row.tips.get(i, ""),
            "ci": row.ci.get(i, ""), "tie": i in row.ties, "star": i in row.marks, "cls": " ".join(cls),
            "drill": row.drill.get(i, "")}


def _table(table: Table, datasets: set[str]) -> dict[str, Any]:
    rows = [{"ref": r.ref, "cells": [_cell(r, i) for i in range(len(r.cells))]} for r in table.rows]
    numeric = [any(c["cells"][i]["v"] for c in rows) for i in range(len(table.heads))]
    return {"heads": [inline(h) for h in table.heads], "numeric": numeric, "rows": rows,
            "tips": [describe(h, datasets) for h in table.heads]}


HEAD_TIPS = {
    "Rank": "grouped rank: the best method and those not significantly below it share rank 1, and so on",
    "Method": "the method (rows marked 'reported' are published numbers, not runs here)",
    "Base": "accuracy on the base classes, % (mean ± std over seeds [95% interval])",
    "New": "accuracy on the new (unseen) classes, % (mean ± std over seeds [95% interval])",
    "HM": "harmonic mean of Base and New, % [95% interval]",
    "ΔHM vs zero-shot": "HM minus zero-shot CLIP's HM, points [paired 95% interval of the difference]",
    "Trainable params": "parameters the method trains",
    "Cost": "compute of all completed cells of the method (GPU-hours or CPU-hours)",
    "Compute": "compute of all completed cells of the method (GPU-hours or CPU-hours)",
    "Runs": "completed / planned runs (seeds × datasets) behind the row",
    "Seeds": "completed / planned seeds",
    "Images/s": "training throughput, images per second",
    "Peak memory (MB)": "peak accelerator memory of a cell",
    "Cells": "completed cells",
    "Avg": "average over the datasets of the table [95% interval]",
    "Target avg": "average over the target datasets [95% interval]",
    "Datasets": "datasets the method was ranked on",
    "Wins / ties / losses": "pairs (dataset, other method) where the paired test finds this method better / "
                            "cannot tell / finds it worse (Holm-corrected over the table)",
    "Win rate": "(wins + ties/2) / comparisons",
    "Error": "the error recorded in result.json",
    "Log": "the cell's log file",
    "Cell": "the cell id (its folder under runs/)",
}


def describe(head: str, datasets: set[str]) -> str:
    """A short description of a column, for its header's title."""
    text = re.sub(r"[*]", "", head).strip()
    if text in HEAD_TIPS:
        return HEAD_TIPS[text]
    if text.startswith("Δ vs reported"):
        return "reproduced minus published value, points (only where the same datasets were averaged)"
    if text.startswith("Mean rank"):
        return "mean over datasets of the method's rank on each (1 = best) [95% t interval over datasets]"
    if text.startswith("K="):
        return f"accuracy with {text[2:]} training images per class, average over datasets, % [95% interval]"
    if text.startswith("Source"):
        return "accuracy on the training (source) dataset, % [95% interval]"
    if text in datasets:
        return f"accuracy on {text}, % (mean ± std over seeds [95% interval])"
    return f"{text}: accuracy, % [95% interval]"


def _protocol(heading: str) -> str | None:
    """The protocol a level-2 heading opens ('' for the sections every protocol shares)."""
    from bench.protocols import of_heading

    return of_heading(heading)


def items(blocks: list, figures: list[tuple[str, Path]], plots_marker: str,
          datasets: set[str] = frozenset()) -> list[dict[str, Any]]:
    """The blocks as template items: heading, table, list, text, raw (<details>), plots; each with the protocol
    of its section (`proto`, '' outside the protocols' sections)."""
    out = _items(blocks, figures, plots_marker, datasets)
    proto = ""
    for item in out:
        if item["kind"] == "heading" and item["level"] <= 2:
            proto = _protocol(str(item["text"]))
        item["proto"] = proto
    return out


def _items(blocks: list, figures: list[tuple[str, Path]], plots_marker: str, datasets) -> list[dict[str, Any]]:
    from markupsafe import Markup

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for block in blocks:
        if isinstance(block, Table):
            out.append({"kind": "table", **_table(block, set(datasets))})
        elif block == plots_marker:
            if figures:
                out.append({"kind": "heading", "level": 2, "text": "Plots", "id": _slug("plots", seen)})
                out.append({"kind": "plots", "figures": [{"caption": cap, "src": data_uri(p)} for cap, p in figures]})
        elif not block.strip():
            continue
        elif block.lstrip().startswith(("<details", "</details")):
            text = block.strip()
            m = re.fullmatch(r"<details><summary>(.*)</summary>", text)
            out.append({"kind": "raw", "html": Markup(f"<details><summary>{inline(m.group(1))}</summary>")
                        if m else Markup("</details>" if text == "</details>" else "")})
        elif (m := _HEADING.match(block.strip())) is not None:
            text = m.group(2)
            out.append({"kind": "heading", "level": len(m.group(1)), "text": inline(text), "id": _slug(text, seen)})
        elif block.lstrip().startswith("- "):
            entry = inline(block.strip()[2:])
            if out and out[-1]["kind"] == "list":
                out[-1]["items"].append(entry)
            else:
                out.append({"kind": "list", "items": [entry]})
        else:
            out.append({"kind": "text", "html": inline(block.strip().strip("_") if block.strip().startswith("_")
                                                       else block.strip())})
    return out


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(board: Any, blocks: list, figures: list[tuple[str, Path]], *, header: str, stats_line: str,
                plots_marker: str) -> str:
    """The whole LEADERBOARD.html text (`board` is bench.report.leaderboard.Board, read for its tables and
    drill-down runs)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    datasets = sorted({t for frame in board.tables.values() if "dataset_title" in frame
                       for t in frame["dataset_title"].dropna().unique()})
    body = items(blocks, figures, plots_marker, set(datasets))
    toc = [i for i in body if i["kind"] == "heading" and i["level"] == 2]
    protocols = [p for p in dict.fromkeys(i["proto"] for i in body) if p]
    drill = json.dumps(getattr(board, "drills", {}), separators=(",", ":")).replace("</", "<\\/")
    return env.get_template("leaderboard.html.j2").render(
        title="CLIP fine-tuning leaderboard", header=header, stats_line=stats_line, overlap=OVERLAP_LINE, items=body,
        toc=toc, tie=TIE, star=STAR.replace("\\", ""), css=(TEMPLATES / "leaderboard.css").read_text(),
        js=(TEMPLATES / "leaderboard.js").read_text(), datasets=datasets, protocols=protocols, drill=drill)
