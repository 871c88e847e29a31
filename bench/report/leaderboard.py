"""Write `<root>/LEADERBOARD.md` (or machine-readable csv/json) from a results tree.

Usage:
    >>> from pathlib import Path
    >>> from bench.report.leaderboard import write_leaderboard
    >>> write_leaderboard(Path("results"))                 # results/LEADERBOARD.md + results/plots/*.png
    >>> write_leaderboard(Path("results"), fmt="json")     # results/leaderboard.json

Layout (harness-study.md §6): header (time, version, git, backbone, seeds, completeness); per protocol a ranked
summary, per-dataset tables and published reference rows with Δ = reproduced − reported; cost; plots; run status;
footnotes. All tables are rendered by tabulate (pipe format); the numbers come from `bench.report.aggregate`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import __version__
from bench.errors import BenchError
from bench.report.aggregate import cost_table, dataset_order, summaries
from bench.report.collect import Results, load_results
from bench.report.mdtable import DASH, STAR, Row, emit, f2, params, pm, present, signed
from bench.report.reported import compare, load_reported

DAGGER = "†"
FORMATS = {"md": "LEADERBOARD.md", "csv": "leaderboard.csv", "json": "leaderboard.json"}
PROTOCOL_TITLES = {"xd": "Cross-dataset transfer", "dg": "Domain generalisation"}
MAX_LISTED = 20


def write_leaderboard(root: Path, out: Path | None = None, fmt: str = "md", *, plots: bool = True,
                      now: dt.datetime | None = None) -> Path:
    """Aggregate `root` and write the leaderboard (md, csv or json) to `out` (default `<root>/LEADERBOARD.md`,
    `leaderboard.csv`, `leaderboard.json`); with md and `plots`, PNGs go to `<root>/plots/`. Returns `out`."""
    if fmt not in FORMATS:
        raise BenchError(f"leaderboard format '{fmt}' is unknown; valid: {', '.join(FORMATS)}")
    root = Path(root)
    res = load_results(root)
    tables = summaries(res)
    cmp = compare(tables, load_reported(root))
    out = Path(out) if out is not None else root / FORMATS[fmt]
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = header_info(res, now)
    if fmt == "md":
        figures: list[tuple[str, Path]] = []
        if plots and tables:
            from bench.report.plots import write_plots
            figures = write_plots(tables, root / "plots", cmp)
        text = render_markdown(res, tables, cmp, meta, figures, out.parent)
    elif fmt == "json":
        doc = {**meta, "tables": {k: _records(v) for k, v in tables.items()}, "reported": _records(cmp)}
        text = json.dumps(doc, indent=1, default=str) + "\n"
    else:
        parts = [v.assign(table=k) for k, v in tables.items()] + ([cmp.assign(table="reported")] if len(cmp) else [])
        text = pd.concat(parts, ignore_index=True).to_csv(index=False) if parts else "table\n"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out


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


@dataclass
class Ctx:
    res: Results
    tables: dict[str, pd.DataFrame]
    cmp: pd.DataFrame
    runs: dict[tuple, tuple[int, int]]
    shown_refs: dict[tuple[str, str, str, str], None] = field(default_factory=dict)

    def run_str(self, bb: str, pt: str, protocol: str, method: str, shots: list[int]) -> str:
        d = sum(self.runs.get((bb, pt, protocol, method, k), (0, 0))[0] for k in shots)
        e = sum(self.runs.get((bb, pt, protocol, method, k), (0, 0))[1] for k in shots)
        return f"{d}/{e}"

    def refs(self, protocol: str, bb: str, pt: str, dataset: str, shots: int | None = None) -> pd.DataFrame:
        """Published rows for one table; with `shots`, only that K (and zero-shot's K = 0)."""
        c = self.cmp
        if c.empty:
            return c
        c = c[(c["protocol"] == protocol) & (c["backbone"] == bb) & (c["pretrained"] == pt) & (c["dataset"] == dataset)]
        return c if shots is None else c[c["shots"].isin([shots, 0])]

    def ref_title(self, rec: pd.Series, title: str) -> str:
        label = f"{title} (reported){'' if rec['verified'] else DAGGER}"
        self.shown_refs[(f"{rec['protocol']}: {label}", rec["mark"], rec["provenance"], rec["note"])] = None
        return label


def _run_counts(res: Results) -> dict[tuple, tuple[int, int]]:
    keys = ["backbone", "pretrained", "protocol", "method", "shots"]
    cells = res.frame.drop_duplicates("cell_id")
    done = cells[cells["status"] == "completed"].groupby(keys).size().to_dict()
    tried = cells.groupby(keys).size().to_dict()
    plan = res.expected.groupby(keys).size().to_dict() if len(res.expected) else {}
    return {k: (int(done.get(k, 0)), int(plan.get(k, 0) or tried.get(k, 0))) for k in set(tried) | set(plan)}


def _sel(frame: pd.DataFrame, bb: str, pt: str) -> pd.DataFrame:
    return frame[(frame["backbone"] == bb) & (frame["pretrained"] == pt)]


def _ref_rows(ctx: Ctx, refs: pd.DataFrame, evals: list[str], titles: dict[str, str], methods: list[str],
              width: int, first: int, delta_evals: list[str] | None = None) -> dict[str, Row]:
    """Reference rows by method: published values in columns first.., Δ (reproduced − reported) of
    `delta_evals` (default: all `evals`) in the last column."""
    out: dict[str, Row] = {}
    for method in methods:
        sub = refs[refs["method"] == method].set_index("eval")
        if sub.empty:
            continue
        head = sub.iloc[0]
        cells = [""] * width
        cells[first - 1] = ctx.ref_title(head, titles.get(method, head["title"]))
        for i, ev in enumerate(evals):
            cells[first + i] = f2(sub["reported"].get(ev))
        deltas = [signed(sub["delta"].get(ev)) if ev in sub.index else DASH for ev in delta_evals or evals]
        if all(cells[first + i] == DASH for i in range(len(evals))):
            continue                      # nothing published for the columns shown
        if not sub["matched"].any():
            cells[-1] = "not run here"
        elif not sub["comparable"].any():
            cells[-1] = "n/a (other datasets)"
        else:
            cells[-1] = " / ".join(deltas)
        out[method] = Row(cells, ref=True)
    return out


def _interleave(rows: list[tuple[str, Row]], refs: dict[str, Row]) -> list[Row]:
    out = []
    for method, row in rows:
        out.append(row)
        if method in refs:
            out.append(refs.pop(method))
    return out + list(refs.values())


def base2new_section(ctx: Ctx, bb: str, pt: str) -> list[str]:
    avg, per = _sel(ctx.tables["base2new_avg"], bb, pt), _sel(ctx.tables["base2new"], bb, pt)
    if avg.empty:
        return []
    b2n = ctx.res.completed
    cost = cost_table(b2n[b2n["protocol"] == "base2new"]).set_index("method")
    out = []
    for k in sorted(s for s in avg["shots"].unique() if s > 0) or [0]:
        sec = avg[avg["shots"].isin([k, 0])].sort_values("hm", ascending=False, na_position="last")
        zs = sec.loc[sec["method"] == "zeroshot", "hm"]
        zs_hm = float(zs.iloc[0]) if len(zs) else math.nan
        titles = dict(zip(sec["method"], sec["method_title"]))
        heads = ["Rank", "Method", "Base", "New", "HM", "ΔHM vs zero-shot", "Trainable params", "Cost", "Runs",
                 "Δ vs reported (B / N / HM)"]
        rows = []
        for rank, r in enumerate(sec.itertuples(), 1):
            c = cost.loc[r.method] if r.method in cost.index else {}
            d_zs = r.hm - zs_hm if r.method != "zeroshot" else math.nan
            cells = [str(rank), r.method_title, pm(r.base, r.base_std), pm(r.new, r.new_std), f2(r.hm),
                     signed(d_zs), params(c.get("trainable_params")), c.get("cost", DASH),
                     ctx.run_str(bb, pt, "base2new", r.method, [r.shots]), ""]
            marks = {2, 3, 4} if r.partial else set()
            rows.append((r.method, Row(cells, {2: r.base, 3: r.new, 4: r.hm, 5: d_zs}, marks)))
        refs = ctx.refs("base2new", bb, pt, "average", k)
        ref_rows = _ref_rows(ctx, refs, ["base", "new", "hm"], titles, list(dict.fromkeys(
            list(sec["method"]) + list(refs.sort_values("reported", ascending=False)["method"]))), len(heads), 2)
        n_ds = per["dataset"].nunique()
        out += [f"## Base-to-new generalisation — {bb}/{pt}, {k} shots, {n_ds}-dataset average\n",
                emit(heads, _interleave(rows, ref_rows), bold=(2, 3, 4, 5))]
        out += _hm_per_dataset(ctx, sec, per[per["shots"].isin([k, 0])], bb, pt)
    return out


def _hm_per_dataset(ctx: Ctx, sec: pd.DataFrame, per: pd.DataFrame, bb: str, pt: str) -> list[str]:
    datasets = per.drop_duplicates("dataset").set_index("dataset").loc[dataset_order(per["dataset"])].reset_index()
    names, dtitles = list(datasets["dataset"]), list(datasets["dataset_title"])
    heads = ["Method"] + dtitles + ["**Avg**"]
    rows = []
    for r in sec.itertuples():
        mine = per[per["method"] == r.method].set_index("dataset")
        cells = [r.method_title] + [f2(mine["hm"].get(d)) for d in names] + [f2(r.hm)]
        values = {i + 1: mine["hm"].get(d, math.nan) for i, d in enumerate(names)} | {len(names) + 1: r.hm}
        marks = {i + 1 for i, d in enumerate(names) if d in mine.index and mine.loc[d, "partial"]}
        rows.append(Row(cells, values, marks | ({len(names) + 1} if r.partial else set())))
    lines = ["### HM per dataset\n", emit(heads, rows, bold=tuple(range(1, len(names) + 2))),
             "<details><summary>Base / New / HM per dataset</summary>\n"]
    for d, title in zip(names, dtitles):
        sub = per[per["dataset"] == d].sort_values("hm", ascending=False)
        titles = dict(zip(sub["method"], sub["method_title"]))
        heads = ["Method", "Base", "New", "HM", "Seeds", "Δ vs reported (B / N / HM)"]
        drows = [(r.method, Row([r.method_title, pm(r.base_mean, r.base_std), pm(r.new_mean, r.new_std), f2(r.hm),
                                 f"{r.n}/{r.n_planned}", ""], {1: r.base_mean, 2: r.new_mean, 3: r.hm},
                                {1, 2, 3} if r.partial else set())) for r in sub.itertuples()]
        refs = ctx.refs("base2new", bb, pt, d, int(sub["shots"].max()))
        refs = refs[refs["method"].isin(sub["method"])]
        ref_rows = _ref_rows(ctx, refs, ["base", "new", "hm"], titles, list(sub["method"]), len(heads), 1)
        lines += [f"#### {title}\n", emit(heads, _interleave(drows, ref_rows), bold=(1, 2, 3))]
    return lines + ["</details>\n"]


def fewshot_section(ctx: Ctx, bb: str, pt: str) -> list[str]:
    avg, per = _sel(ctx.tables["fewshot_avg"], bb, pt), _sel(ctx.tables["fewshot"], bb, pt)
    if avg.empty:
        return []
    ks = sorted(avg["shots"].unique())
    order = (avg.sort_values("shots").groupby("method").agg(last=("acc", "last"), k=("shots", "max"))
             .sort_values(["k", "last"], ascending=False).index.tolist())
    titles = dict(zip(avg["method"], avg["method_title"]))
    heads = ["Method"] + [f"K={k}" for k in ks] + ["Runs", f"Δ vs reported (K={'/'.join(map(str, ks))})"]
    rows = []
    for m in order:
        mine = avg[avg["method"] == m].set_index("shots")
        cells = [titles[m]] + [pm(mine["acc"].get(k), mine["std"].get(k)) for k in ks]
        marks = {i + 1 for i, k in enumerate(ks) if k in mine.index and mine.loc[k, "partial"]}
        values = {i + 1: mine["acc"].get(k, math.nan) for i, k in enumerate(ks)}
        rows.append((m, Row(cells + [ctx.run_str(bb, pt, "fewshot", m, ks), ""], values, marks)))
    refs = ctx.refs("fewshot", bb, pt, "average")
    refs = refs.assign(eval=refs["shots"].map(lambda k: f"K={k}")) if len(refs) else refs
    ref_order = order + list(refs.sort_values("reported", ascending=False)["method"]) if len(refs) else order
    ref_rows = _ref_rows(ctx, refs, [f"K={k}" for k in ks], titles, list(dict.fromkeys(ref_order)), len(heads), 1)
    n_ds = per["dataset"].nunique()
    out = [f"## Few-shot classification — {bb}/{pt}, top-1 % on all classes, mean ± std over seeds\n",
           f"### Average over {n_ds} datasets\n",
           emit(heads, _interleave(rows, ref_rows), bold=tuple(range(1, len(ks) + 1)))]
    datasets = per.drop_duplicates("dataset").set_index("dataset").loc[dataset_order(per["dataset"])].reset_index()
    for k in sorted(s for s in ks if s > 0) or [0]:
        sub = per[per["shots"].isin([k, 0])]
        heads = ["Method"] + list(datasets["dataset_title"]) + ["**Avg**"]
        krows = []
        for m in [m for m in order if m in set(sub["method"])]:
            mine = sub[sub["method"] == m].set_index("dataset")
            a = avg[(avg["method"] == m) & avg["shots"].isin([k, 0])].iloc[0]
            names = list(datasets["dataset"])
            cells = [titles[m]] + [pm(mine["mean"].get(d), mine["std"].get(d)) for d in names] + [f2(a["acc"])]
            values = {i + 1: mine["mean"].get(d, math.nan) for i, d in enumerate(names)} | {len(names) + 1: a["acc"]}
            marks = {i + 1 for i, d in enumerate(names) if d in mine.index and mine.loc[d, "partial"]}
            krows.append(Row(cells, values, marks | ({len(names) + 1} if a["partial"] else set())))
        out += [f"### K = {k}\n", emit(heads, krows, bold=tuple(range(1, len(datasets) + 2)))]
    return out


def transfer_section(ctx: Ctx, protocol: str, bb: str, pt: str) -> list[str]:
    table = _sel(ctx.tables[protocol], bb, pt)
    out = []
    for source, src in table.groupby("dataset"):
        for k in sorted(s for s in src["shots"].unique() if s > 0) or [0]:
            sec = src[src["shots"].isin([k, 0])]
            targets = [e for e in dataset_order(sec["eval"]) if e not in ("source", "target_avg")]
            evals = ["source"] + targets + (["target_avg"] if targets else [])
            etitles = dict(zip(sec["eval"], sec["eval_title"]))
            heads = ["Method", f"Source ({sec['dataset_title'].iloc[0]})"] + [etitles[e] for e in evals[1:]]
            heads += ["Runs", "Δ vs reported (source / target avg)"]
            wide = sec.pivot_table(index="method", columns="eval", values="mean", aggfunc="first")
            part = sec.groupby(["method", "eval"])["partial"].any()
            std = sec.set_index(["method", "eval"])["std"]
            order = wide.sort_values(evals[-1], ascending=False).index.tolist()
            titles = dict(zip(sec["method"], sec["method_title"]))
            rows = []
            for m in order:
                cells = [titles[m]] + [pm(wide.loc[m].get(e), std.get((m, e))) for e in evals]
                marks = {i + 1 for i, e in enumerate(evals) if part.get((m, e), False)}
                shots = sorted(sec.loc[sec["method"] == m, "shots"].unique())
                values = {i + 1: wide.loc[m].get(e, math.nan) for i, e in enumerate(evals)}
                rows.append((m, Row(cells + [ctx.run_str(bb, pt, protocol, m, shots), ""], values, marks)))
            refs = ctx.refs(protocol, bb, pt, source, k)
            refs = refs[refs["eval"].isin(["source", "target_avg"]) | refs["eval"].isin(targets)]
            ref_rows = _ref_rows(ctx, refs, evals, titles, list(dict.fromkeys(order + list(refs["method"]))),
                                 len(heads), 1, delta_evals=[evals[0], evals[-1]])
            out += [f"## {PROTOCOL_TITLES[protocol]} — {bb}/{pt}, trained on {sec['dataset_title'].iloc[0]} "
                    f"({k} shots)\n", emit(heads, _interleave(rows, ref_rows), bold=tuple(range(1, len(evals) + 1)))]
    return out


def cost_section(ctx: Ctx, bb: str, pt: str) -> list[str]:
    if "cost" not in ctx.tables:
        return []
    cost = _sel(ctx.tables["cost"], bb, pt).sort_values("trainable_params")
    heads = ["Method", "Trainable params", "Compute", "Images/s", "Peak memory (MB)", "Cells"]
    rows = [Row([r.method_title, params(r.trainable_params), r.cost, f"{r.images_per_s:.0f}" if present(r.images_per_s)
                 else DASH, f"{r.peak_mem_mb:.0f}" if present(r.peak_mem_mb) else DASH, str(r.cells)])
            for r in cost.itertuples()]
    return [f"## Cost — {bb}/{pt} (all protocols, completed cells)\n", emit(heads, rows)]


def status_section(res: Results) -> list[str]:
    c = res.completeness()
    lines = ["## Run status\n", f"- {c['done']}/{c['expected']} planned cells complete · {c['failed']} failed · "
             f"{c['missing']} missing · {c['malformed']} malformed file(s) skipped"
             + (f" · {c['unplanned']} completed outside any sweep" if c["unplanned"] else "")
             + (f" · {c['superseded']} superseded by newer runs" if c["superseded"] else "") + "\n"]
    keys = ["Method", "Dataset", "Protocol", "K", "Seed"]
    if c["failed"]:
        f = res.failed.head(MAX_LISTED)
        rows = [Row([r.method, r.dataset, r.protocol, str(r.shots), str(r.seed), _error(r.path),
                     f"[log]({Path(r.path).parent / 'log.txt'})"]) for r in f.itertuples()]
        lines += ["### Failed cells (not averaged)\n", emit(keys + ["Error", "Log"], rows), _more(c["failed"])]
    if c["missing"]:
        m = res.missing.head(MAX_LISTED)
        rows = [Row([r.method, r.dataset, r.protocol, str(r.shots), str(r.seed), r.cell_id]) for r in m.itertuples()]
        lines += ["### Missing cells (planned, no result yet)\n", emit(keys + ["Cell"], rows), _more(c["missing"])]
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
    lines = ["## Notes\n",
             "- Accuracy is top-1 % on the test split. ± is the **sample** standard deviation over seeds (ddof=1); "
             "for dataset averages it is the sample std over seeds of the per-seed average, using seeds present on "
             "every dataset. (CoOp's parse_test_res.py reports the population std, ddof=0.)",
             "- HM = 2·Base·New/(Base+New), computed per dataset from the seed-averaged Base and New. The average "
             "row's HM is HM(average Base, average New) over datasets (CoCoOp convention: 69.34/74.22 → 71.70), "
             "never the mean of per-dataset or per-seed HMs.",
             f"- {STAR} fewer runs than planned (missing seeds, or missing datasets in an average); "
             f"{DASH} no completed run. Bold = best reproduced value per column. Failed cells are not averaged.",
             "- Zero-shot rows (K = 0) appear as the baseline in every K section; ΔHM is relative to them.",
             f"- *(reported)* rows are published numbers from `results/reported/*.yaml`; Δ = reproduced − reported, "
             f"shown only when the reproduced average covers the same datasets. {DAGGER} = not verified "
             "(3RD-PARTY, RECALL, DERIVED or UNVERIFIED in the reference).\n"]
    if ctx.shown_refs:
        lines += ["<details><summary>Provenance of the reported rows</summary>\n"]
        lines += [f"- {label}: {mark}; {prov}" + (f" ({note})" if note else "")
                  for label, mark, prov, note in ctx.shown_refs]
        lines += ["\n</details>\n"]
    return lines


def render_markdown(res: Results, tables: dict[str, pd.DataFrame], cmp: pd.DataFrame, meta: dict[str, Any],
                    figures: list[tuple[str, Path]], out_dir: Path) -> str:
    """The whole LEADERBOARD.md text."""
    c = meta["completeness"]
    head = (f"_Generated {meta['generated']} by bench v{meta['bench']} (git {meta['git']}) · backbone "
            f"{', '.join(meta['backbones']) or DASH} · seeds {','.join(map(str, meta['seeds'])) or DASH} · runs "
            f"{c['done']}/{c['expected']} complete, {c['failed']} failed, {c['missing']} missing_\n")
    lines = ["# CLIP fine-tuning leaderboard\n", head]
    ctx = Ctx(res, tables, cmp, _run_counts(res))
    pairs = sorted(set(map(tuple, res.completed[["backbone", "pretrained"]].drop_duplicates().to_numpy())))
    for bb, pt in pairs:
        if "base2new" in tables:
            lines += base2new_section(ctx, bb, pt)
        if "fewshot" in tables:
            lines += fewshot_section(ctx, bb, pt)
        for proto in ("xd", "dg"):
            if proto in tables:
                lines += transfer_section(ctx, proto, bb, pt)
        lines += cost_section(ctx, bb, pt)
    if not pairs:
        lines.append("_No completed runs yet._\n")
    if figures:
        lines += ["## Plots\n"] + [f"![{cap}]({Path(os.path.relpath(p, out_dir)).as_posix()})\n" for cap, p in figures]
    lines += status_section(res) + notes(ctx)
    return "\n".join(line for line in lines if line is not None)
