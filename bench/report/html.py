"""LEADERBOARD.html: the leaderboard's blocks rendered by a Jinja2 template into one self-contained page.

Usage:
    >>> from bench.report.leaderboard import write_leaderboard
    >>> write_leaderboard(Path("results"), html=True)        # results/LEADERBOARD.md + results/LEADERBOARD.html

The page needs no network: CSS and JavaScript are inline (templates/leaderboard.css, leaderboard.js, plain JS),
plots are embedded as base64 data URIs. Tables sort by clicking a header (reference rows move with their
method); every value carries its 95 % interval and tie test in a hover text, and a checkbox shows the intervals
inline (`?ci=1` ticks it on load). `?selftest=1` makes the page sort a table and record what it saw in
`<body data-selftest>`, so a headless browser (`chromium --headless --dump-dom`) can check it (tests/test_html.py).
"""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from typing import Any

from bench.report.mdtable import STAR, TIE, Row, Table

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
            "ci": row.ci.get(i, ""), "tie": i in row.ties, "star": i in row.marks, "cls": " ".join(cls)}


def _table(table: Table) -> dict[str, Any]:
    rows = [{"ref": r.ref, "cells": [_cell(r, i) for i in range(len(r.cells))]} for r in table.rows]
    numeric = [any(c["cells"][i]["v"] for c in rows) for i in range(len(table.heads))]
    return {"heads": [inline(h) for h in table.heads], "numeric": numeric, "rows": rows}


def items(blocks: list, figures: list[tuple[str, Path]], plots_marker: str) -> list[dict[str, Any]]:
    """The blocks as template items: heading, table, list, text, raw (<details>), plots."""
    from markupsafe import Markup

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for block in blocks:
        if isinstance(block, Table):
            out.append({"kind": "table", **_table(block)})
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


def render_html(board: Any, blocks: list, figures: list[tuple[str, Path]]) -> str:
    """The whole LEADERBOARD.html text (`board` is bench.report.leaderboard.Board)."""
    import jinja2

    from bench.report.leaderboard import PLOTS, STATS_LINE, header_line

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    body = items(blocks, figures, PLOTS)
    toc = [i for i in body if i["kind"] == "heading" and i["level"] == 2]
    return env.get_template("leaderboard.html.j2").render(
        title="CLIP fine-tuning leaderboard", header=header_line(board.meta), stats_line=STATS_LINE, items=body,
        toc=toc, tie=TIE, star=STAR.replace("\\", ""), css=(TEMPLATES / "leaderboard.css").read_text(),
        js=(TEMPLATES / "leaderboard.js").read_text())
