"""Write `<root>/LEADERBOARD.md` (and LEADERBOARD.html, or machine-readable csv/json) from a results tree.

Usage:
    >>> from pathlib import Path
    >>> from bench.report.leaderboard import write_leaderboard
    >>> write_leaderboard(Path("results"))                 # results/LEADERBOARD.md + results/plots/*.png
    >>> write_leaderboard(Path("results"), html=True)      # ... and results/LEADERBOARD.html beside it
    >>> write_leaderboard(Path("results"), fmt="json")     # results/leaderboard.json

Layout (harness-study.md §6): header (time, version, git, backbone, seeds, completeness, the statistics used);
per protocol a ranked summary, per-dataset tables and published reference rows with Δ = reproduced − reported;
cost; plots; run status; footnotes. The sections are built once as blocks (bench.report.sections) and rendered
by tabulate (pipe format) or by the Jinja2 template (bench.report.html); the numbers come from
`bench.report.aggregate`, the intervals and ties from `bench.report.uncertainty`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import __version__
from bench.errors import BenchError
from bench.protocols import in_board_order
from bench.report import stats
from bench.report.aggregate import summaries
from bench.report.collect import Results, load_results
from bench.report.mdtable import DASH, OVERLAP_LINE, STAR, TIE, Row, Table, params, present
from bench.report.reported import compare, load_reported
from bench.report.sections import (
    DAGGER,
    Block,
    Ctx,
    protocol_section,
    run_counts,
    sel,
)
from bench.report.uncertainty import Uncertainty

FORMATS = {"md": "LEADERBOARD.md", "html": "LEADERBOARD.html", "csv": "leaderboard.csv", "json": "leaderboard.json"}
MAX_LISTED = 20
PLOTS = "@plots"          # the block where the plots go
STATS_LINE = (f"Intervals: {stats.LEVEL:.0%}, for the expected accuracy over seeds and test images (crossed random "
              "effects, analytic; one seed: test images only). "
              f"{TIE} = statistically tied with the column's best (bold): {stats.TEST_NAME}, α = {stats.ALPHA}, "
              f"{stats.CORRECTION} correction over the methods compared in the column. Rank: grouped (a rank is "
              "shared by the methods tied with that group's best).")


@dataclass
class Board:
    """Everything a leaderboard is rendered from."""

    root: Path
    res: Results
    tables: dict[str, pd.DataFrame]
    cmp: pd.DataFrame
    meta: dict[str, Any]
    unc: Uncertainty
    drills: dict[str, list[dict]] = field(default_factory=dict)    # the runs behind each value (HTML drill-down)


def build(root: Path, now: dt.datetime | None = None) -> Board:
    """Load and aggregate `root`: summary tables with intervals, the reported comparison and the header data."""
    root = Path(root)
    res = load_results(root)
    unc = Uncertainty(res.frame)
    tables = summaries(res, intervals=unc)
    return Board(root, res, tables, compare(tables, load_reported(root)), header_info(res, now), unc)


def write_leaderboard(root: Path, out: Path | None = None, fmt: str = "md", *, plots: bool = True,
                      now: dt.datetime | None = None, html: bool = False) -> Path:
    """Aggregate `root` and write the leaderboard (md, html, csv or json) to `out` (default `<root>/` +
    LEADERBOARD.md, LEADERBOARD.html, leaderboard.csv, leaderboard.json); with md or html and `plots`, PNGs go to
    `<root>/plots/` (the HTML embeds them). With md, `html=True` also writes LEADERBOARD.html beside `out`.
    Returns `out`."""
    if fmt not in FORMATS:
        raise BenchError(f"leaderboard format '{fmt}' is unknown; valid: {', '.join(FORMATS)}")
    board = build(root, now)
    out = Path(out) if out is not None else board.root / FORMATS[fmt]
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("md", "html"):
        figures: list[tuple[str, Path]] = []
        if plots and board.tables:
            from bench.report.plots import write_plots
            figures = write_plots(board.tables, board.root / "plots", board.cmp)
        blocks = sections(board)
        if fmt == "html" or html:
            from bench.report.html import render_html
            target = out if fmt == "html" else out.with_name(FORMATS["html"])
            _write(target, render_html(board, blocks, figures, header=header_line(board.meta), stats_line=STATS_LINE,
                                       plots_marker=PLOTS))
        if fmt == "html":
            return out
        text = render_markdown(board, blocks, figures, out.parent)
    elif fmt == "json":
        doc = {**board.meta, "tables": {k: _records(v) for k, v in board.tables.items()},
               "reported": _records(board.cmp)}
        text = json.dumps(doc, indent=1, default=str) + "\n"
    else:
        parts = [v.assign(table=k) for k, v in board.tables.items()]
        parts += [board.cmp.assign(table="reported")] if len(board.cmp) else []
        text = pd.concat(parts, ignore_index=True).to_csv(index=False) if parts else "table\n"
    _write(out, text)
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", double_precision=10)) if len(frame) else []


def git_sha() -> str:
    """`git rev-parse --short HEAD` of the bench checkout, or "unknown"."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def header_info(res: Results, now: dt.datetime | None = None) -> dict[str, Any]:
    """Generation time (UTC), bench version, git sha, backbones, seeds and completeness counts."""
    now = now or dt.datetime.now(dt.timezone.utc)
    done = res.completed
    seeds = sorted(set(res.expected["seed"]) | set(done["seed"])) if len(res.expected) else sorted(set(done["seed"]))
    pairs = done[["backbone", "pretrained"]].drop_duplicates().itertuples(index=False)
    return {"generated": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "bench": __version__, "git": git_sha(),
            "backbones": sorted(f"{b}/{p}" for b, p in pairs), "seeds": [int(s) for s in seeds],
            "completeness": res.completeness()}


# ------------------------------------------------------------------------------------------------------ sections


def cost_section(ctx: Ctx, bb: str, pt: str) -> list[Block]:
    if "cost" not in ctx.tables:
        return []
    cost = sel(ctx.tables["cost"], bb, pt).sort_values("trainable_params")
    heads = ["Method", "Trainable params", "Compute", "Images/s", "Peak memory (MB)", "Cells"]
    rows = [Row([r.method_title, params(r.trainable_params), r.cost, f"{r.images_per_s:.0f}" if present(r.images_per_s)
                 else DASH, f"{r.peak_mem_mb:.0f}" if present(r.peak_mem_mb) else DASH, str(r.cells)],
                {1: r.trainable_params, 2: r.gpu_h + r.cpu_h, 3: r.images_per_s, 4: r.peak_mem_mb, 5: r.cells})
            for r in cost.itertuples()]
    return [f"## Cost — {bb}/{pt} (all protocols, completed cells)\n", Table(heads, rows)]


def status_section(res: Results) -> list[Block]:
    c = res.completeness()
    lines: list[Block] = ["## Run status\n", f"- {c['done']}/{c['expected']} planned cells complete · {c['failed']} failed · "
             f"{c['missing']} missing · {c['malformed']} malformed file(s) skipped"
             + (f" · {c['unplanned']} completed outside any sweep" if c["unplanned"] else "")
             + (f" · {c['superseded']} superseded by newer runs" if c["superseded"] else "") + "\n"]
    keys = ["Method", "Dataset", "Protocol", "K", "Seed"]
    if c["failed"]:
        f = res.failed.head(MAX_LISTED)
        rows = [Row([r.method, r.dataset, r.protocol, str(r.shots), str(r.seed), _error(r.path),
                     f"[log]({Path(r.path).parent / 'log.txt'})"]) for r in f.itertuples()]
        lines += ["### Failed cells (not averaged)\n", Table(keys + ["Error", "Log"], rows), _more(c["failed"])]
    if c["missing"]:
        m = res.missing.head(MAX_LISTED)
        rows = [Row([r.method, r.dataset, r.protocol, str(r.shots), str(r.seed), r.cell_id]) for r in m.itertuples()]
        lines += ["### Missing cells (planned, no result yet)\n", Table(keys + ["Cell"], rows), _more(c["missing"])]
    if res.malformed:
        lines += ["### Malformed files (skipped)\n"] + [f"- `{line}`" for line in res.malformed[:MAX_LISTED]]
        lines += ["", _more(len(res.malformed))]
    return lines


def _more(n: int) -> str:
    return f"_… and {n - MAX_LISTED} more_\n" if n > MAX_LISTED else ""


def _error(path: str) -> str:
    try:
        err = json.loads(Path(path).read_text(encoding="utf-8")).get("error") or {}
    except (OSError, ValueError):
        return DASH
    text = f"{err.get('type', '')}: {err.get('message', '')}".strip(": ").replace("|", "/").replace("\n", " ")
    return text[:80] or DASH


def notes(ctx: Ctx) -> list[str]:
    basis = ctx.unc.basis_counts()
    lines = ["## Notes\n",
             "- Accuracy is top-1 % on the test split. ± is the **sample** standard deviation over seeds (ddof=1); "
             "for dataset averages it is the sample std over seeds of the per-seed average, using seeds present on "
             "every dataset. (CoOp's parse_test_res.py reports the population std, ddof=0.)",
             "- HM = 2·Base·New/(Base+New), computed per dataset from the seed-averaged Base and New. The average "
             "row's HM is HM(average Base, average New) over datasets (CoCoOp convention: 69.34/74.22 → 71.70), "
             "never the mean of per-dataset or per-seed HMs.",
             f"- {STAR} fewer runs than planned (missing seeds, or missing datasets in an average); "
             f"{DASH} no completed run. Bold = best reproduced value per column. Failed cells are not averaged.",
             "- Zero-shot rows (K = 0) appear as the baseline in every K section; ΔHM is relative to them, and its "
             "[interval] is the paired 95% interval of the HM difference.",
             f"- [lo, hi] is the {stats.LEVEL:.0%} interval of the value's expectation over seeds and test images: "
             "seeds and images as crossed random effects, the variance of the mean estimated from the per-seed "
             "values and the images' mean squares (predictions.npz), a t-type reference for the few seeds (details "
             "in README, \"How sure a ranking is\"); averages and HMs by the same model (the HM linearised). "
             "Without predictions.npz a method's seeds count as fully correlated on the images (conservative). "
             "With one seed an interval covers the test images only, not the seed" + (f" ({basis['images']} "
             "group(s) here)" if basis["images"] else "") + "; where a result.json has no image count, the seeds "
             "only" + (f" ({basis['seeds']} group(s) here)" if basis["seeds"] else "") + ".",
             f"- {TIE} marks a value statistically tied with the column's best: {stats.TEST_NAME} of the difference "
             "to the best on identical seeds and test images (per-image predictions, predictions.npz), α = "
             f"{stats.ALPHA}, {stats.CORRECTION}-corrected over the methods of the column. A rank is shared by a "
             "group's best and the methods tied with it. "
             + (f"{len(ctx.unpaired)} column(s) compared some methods without image pairing (no predictions.npz, "
                "or different test images): those kept the seed pairing but took the two methods' images as "
                "uncorrelated."
                if ctx.unpaired else "Every comparison here was paired image by image.") + " " + OVERLAP_LINE,
             f"- *(reported)* rows are published numbers from `results/reported/*.yaml`; Δ = reproduced − reported, "
             f"shown only when the reproduced average covers the same datasets. {DAGGER} = not verified "
             "(3RD-PARTY, RECALL, DERIVED or UNVERIFIED in the reference).\n"]
    if ctx.shown_refs:
        lines += ["<details><summary>Provenance of the reported rows</summary>\n"]
        lines += [f"- {label}: {mark}; {prov}" + (f" ({note})" if note else "")
                  for label, mark, prov, note in ctx.shown_refs]
        lines += ["\n</details>\n"]
    return lines


def sections(board: Board) -> list[Block]:
    """Every section after the header (results per backbone, cost, run status, notes) as blocks."""
    ctx = Ctx(board.res, board.tables, board.cmp, run_counts(board.res), board.unc)
    out: list[Block] = []
    pairs = sorted(set(map(tuple, board.res.completed[["backbone", "pretrained"]].drop_duplicates().to_numpy())))
    for bb, pt in pairs:
        for proto in in_board_order():
            if proto.tables[0] in board.tables:
                out += protocol_section(ctx, proto, bb, pt)
        out += cost_section(ctx, bb, pt)
    if not pairs:
        out.append("_No completed runs yet._\n")
    board.drills = ctx.drills
    return out + [PLOTS] + status_section(board.res) + notes(ctx)


def header_line(meta: dict[str, Any]) -> str:
    c = meta["completeness"]
    return (f"Generated {meta['generated']} by bench v{meta['bench']} (git {meta['git']}) · backbone "
            f"{', '.join(meta['backbones']) or DASH} · seeds {','.join(map(str, meta['seeds'])) or DASH} · runs "
            f"{c['done']}/{c['expected']} complete, {c['failed']} failed, {c['missing']} missing")


def render_markdown(board: Board, blocks: list[Block], figures: list[tuple[str, Path]], out_dir: Path) -> str:
    """The whole LEADERBOARD.md text."""
    lines = ["# CLIP fine-tuning leaderboard\n", f"_{header_line(board.meta)}_\n", f"_{STATS_LINE}_\n"]
    for block in blocks:
        if isinstance(block, Table):
            lines.append(block.markdown())
        elif block == PLOTS:
            if figures:
                lines += ["## Plots\n"] + [f"![{cap}]({Path(os.path.relpath(p, out_dir)).as_posix()})\n"
                                           for cap, p in figures]
        else:
            lines.append(block)
    return "\n".join(line for line in lines if line is not None)
