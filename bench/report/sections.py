"""The leaderboard's result sections as blocks — markdown text lines and `Table`s — shared by LEADERBOARD.md
and LEADERBOARD.html (bench.report.leaderboard, bench.report.html).

Every number column carries its 95 % interval, a ≈ mark on the entries statistically tied with the column's
best (bench.report.uncertainty: paired test, Holm) and a hover text; ranked tables (base-to-new by HM,
few-shot by the largest K) show grouped ranks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import pandas as pd

from bench.protocols import Protocol
from bench.report.aggregate import cost_table, dataset_order
from bench.report.collect import Results
from bench.report.mdtable import DASH, Row, Table, f2, interval, params, pm, present, signed
from bench.report.ranking import across_datasets
from bench.report.uncertainty import ENTRY, Entry, Stat, Uncertainty

DAGGER = "†"
BASIS = {"seeds+images": "seeds and test images", "images": "one seed: test images only, not the seed",
         "seeds": "no image counts: seeds only"}
Block = str | Table


@dataclass
class Ctx:
    res: Results
    tables: dict[str, pd.DataFrame]
    cmp: pd.DataFrame
    runs: dict[tuple, tuple[int, int]]
    unc: Uncertainty
    shown_refs: dict[tuple[str, str, str, str], None] = field(default_factory=dict)
    unpaired: set[tuple] = field(default_factory=set)        # columns where some comparison was not image-paired
    drills: dict[str, list[dict]] = field(default_factory=dict)   # id → the runs behind a value (HTML drill-down)
    _drill_ids: dict[tuple, str] = field(default_factory=dict)
    _by_entry: dict | None = None

    def drill(self, entry: Entry, stat: Stat) -> str:
        """The id of the runs behind `entry`'s value of `stat`: per run its dataset, evaluation, seed, accuracy,
        images, cell id, result.json (its config) and log path."""
        items = frozenset(i for part in stat.parts for i in part)
        key = (entry, items)
        if key not in self._drill_ids:
            if self._by_entry is None:          # once: every completed run as a small record, by entry
                self._by_entry = {}
                done = self.res.completed
                cols = ENTRY + ["dataset", "eval", "seed", "acc", "n", "cell_id", "path"]
                for rec in done[cols].to_dict("records") if len(done) else []:
                    self._by_entry.setdefault(tuple(rec[c] for c in ENTRY), []).append(rec)
            recs = []
            for r in sorted((r for r in self._by_entry.get(tuple(entry), []) if (r["dataset"], r["eval"]) in items),
                            key=lambda r: (r["dataset"], r["eval"], r["seed"])):
                recs.append({"dataset": r["dataset"], "eval": r["eval"], "seed": int(r["seed"]),
                             "acc": round(float(r["acc"]), 4), "n": int(r["n"]) if present(r["n"]) else None,
                             "cell": r["cell_id"], "result": str(r["path"]),
                             "log": os.path.join(os.path.dirname(str(r["path"])), "log.txt")})
            self._drill_ids[key] = f"d{len(self._drill_ids)}"
            self.drills[self._drill_ids[key]] = recs
        return self._drill_ids[key]

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


def run_counts(res: Results) -> dict[tuple, tuple[int, int]]:
    keys = ["backbone", "pretrained", "protocol", "method", "shots"]
    cells = res.frame.drop_duplicates("cell_id")
    done = cells[cells["status"] == "completed"].groupby(keys).size().to_dict()
    tried = cells.groupby(keys).size().to_dict()
    plan = res.expected.groupby(keys).size().to_dict() if len(res.expected) else {}
    return {k: (int(done.get(k, 0)), int(plan.get(k, 0) or tried.get(k, 0))) for k in set(tried) | set(plan)}


def sel(frame: pd.DataFrame, bb: str, pt: str) -> pd.DataFrame:
    return frame[(frame["backbone"] == bb) & (frame["pretrained"] == pt)]


def annotate(ctx: Ctx, rows: list[tuple[Entry | None, Row]], columns: dict[int, Stat]) -> None:
    """Per stat column: each entry's interval and hover text, and ≈ on the entries tied with the best."""
    for col, stat in columns.items():
        live = [(e, r) for e, r in rows if e is not None and not r.ref and present(r.values.get(col))]
        for (e, r), (lo, hi) in zip(live, ctx.unc.intervals([(e, stat) for e, _ in live])):
            basis = ctx.unc.basis(e, _datasets(stat))
            r.ci[col] = interval(lo, hi)
            if basis == "images" and e[ENTRY.index("shots")] != 0 and r.ci[col]:   # a trained method, one seed:
                r.ci[col] = r.ci[col][:-1] + ", 1 seed]"                          # the seed is not in the interval
            r.tips[col] = (f"95% CI {lo:.2f} to {hi:.2f} ({BASIS[basis]})" if present(lo) else
                           f"no interval ({BASIS[basis]})")
            r.drill[col] = ctx.drill(e, stat)
        if len(live) < 2:
            continue
        best, decision = ctx.unc.ties([e for e, _ in live], stat)
        for e, r in live:
            if e == best:
                r.tips[col] += "; best of the column"
            elif e in decision:
                p_adj, tie = decision[e]
                r.ties |= {col} if tie else set()
                r.tips[col] += f"; {'tied with' if tie else 'below'} the best (Holm-adjusted p = {p_adj:.3g})"
                if not ctx.unc.compare(best, e, stat).paired:
                    ctx.unpaired.add((col, stat))


def _datasets(stat: Stat) -> list[str]:
    return sorted({d for part in stat.parts for d, _ in part})


def _ref_rows(ctx: Ctx, refs: pd.DataFrame, evals: list[str], titles: dict[str, str], methods: list[str],
              width: int, first: int, delta_evals: list[str] | None = None) -> dict[str, Row]:
    """Reference rows by method: published values in columns first.., Δ (reproduced − reported) of
    `delta_evals` (default: all `evals`) in the last column."""
    out: dict[str, Row] = {}
    by_method = {m: g.set_index("eval") for m, g in refs.groupby("method")} if len(refs) else {}
    for method in methods:
        sub = by_method.get(method)
        if sub is None or sub.empty:
            continue
        head = sub.iloc[0]
        cells = [""] * width
        cells[first - 1] = ctx.ref_title(head, titles.get(method, head["title"]))
        values = {}
        for i, ev in enumerate(evals):
            cells[first + i] = f2(sub["reported"].get(ev))
            values[first + i] = sub["reported"].get(ev, math.nan)
        deltas = [signed(sub["delta"].get(ev)) if ev in sub.index else DASH for ev in delta_evals or evals]
        if all(cells[first + i] == DASH for i in range(len(evals))):
            continue                      # nothing published for the columns shown
        if not sub["matched"].any():
            cells[-1] = "not run here"
        elif not sub["comparable"].any():
            cells[-1] = "n/a (other datasets)"
        else:
            cells[-1] = " / ".join(deltas)
        out[method] = Row(cells, values, ref=True)
    return out


def _interleave(rows: list[tuple[str, Row]], refs: dict[str, Row]) -> list[Row]:
    out = []
    for method, row in rows:
        out.append(row)
        if method in refs:
            out.append(refs.pop(method))
    return out + list(refs.values())


def _rank_order(ctx: Ctx, entries: dict[str, Entry], stat: Stat, value: dict[str, float]) -> tuple[list[str], dict]:
    """Methods ordered by grouped rank, then value; methods without a value last. Returns (order, ranks)."""
    ranks = ctx.unc.ranks(list(entries.values()), stat)
    by_method = {m: ranks.get(e) for m, e in entries.items()}
    order = sorted(entries, key=lambda m: (by_method[m] is None, by_method[m] or 0, -_num(value.get(m))))
    return order, by_method


def _num(x) -> float:
    return float(x) if present(x) else -math.inf


def base2new_section(ctx: Ctx, proto: Protocol, bb: str, pt: str) -> list[Block]:
    avg, per = sel(ctx.tables[proto.tables[1]], bb, pt), sel(ctx.tables[proto.tables[0]], bb, pt)
    if avg.empty:
        return []
    b2n = ctx.res.completed
    cost = cost_table(b2n[b2n["protocol"] == proto.name]).set_index("method")
    out: list[Block] = []
    for k in sorted(s for s in avg["shots"].unique() if s > 0) or [0]:
        sec = avg[avg["shots"].isin([k, 0])].set_index("method")
        ds = sorted(per.loc[per["shots"].isin([k, 0]), "dataset"].unique())
        st = {2: Stat.mean([(d, "base") for d in ds]), 3: Stat.mean([(d, "new") for d in ds]),
              4: Stat.hm([(d, "base") for d in ds], [(d, "new") for d in ds])}
        entries = {m: (bb, pt, proto.name, m, int(r["shots"])) for m, r in sec.iterrows()}
        order, ranks = _rank_order(ctx, entries, st[4], sec["hm"].to_dict())
        zs = entries.get("zeroshot")
        zs_hm = float(sec.loc["zeroshot", "hm"]) if zs else math.nan
        titles = sec["method_title"].to_dict()
        heads = ["Rank", "Method", "Base", "New", "HM", "ΔHM vs zero-shot", "Trainable params", "Cost", "Runs",
                 "Δ vs reported (B / N / HM)"]
        rows = []
        for m in order:
            r, c = sec.loc[m], (cost.loc[m] if m in cost.index else {})
            d_zs = r["hm"] - zs_hm if m != "zeroshot" else math.nan
            cells = [str(ranks[m]) if ranks[m] else DASH, r["method_title"], pm(r["base"], r["base_std"]),
                     pm(r["new"], r["new_std"]), f2(r["hm"]), signed(d_zs), params(c.get("trainable_params")),
                     c.get("cost", DASH), ctx.run_str(bb, pt, proto.name, m, [int(r["shots"])]), ""]
            row = Row(cells, {0: -(ranks[m] or math.inf), 2: r["base"], 3: r["new"], 4: r["hm"], 5: d_zs,
                              6: c.get("trainable_params", math.nan)},
                      {2, 3, 4} if r["partial"] else set())
            if zs and m != "zeroshot" and present(d_zs):
                cmp = ctx.unc.compare(entries[m], zs, st[4])
                row.ci[5] = interval(cmp.lo, cmp.hi)
                row.tips[5] = f"paired 95% CI of the HM difference {cmp.lo:+.2f} to {cmp.hi:+.2f} (p = {cmp.p:.3g})"
            rows.append((m, row))
        annotate(ctx, [(entries[m], row) for m, row in rows], st)
        refs = ctx.refs(proto.name, bb, pt, "average", k)
        ref_rows = _ref_rows(ctx, refs, ["base", "new", "hm"], titles, list(dict.fromkeys(
            order + list(refs.sort_values("reported", ascending=False)["method"]))), len(heads), 2)
        out += [f"## {proto.title} — {bb}/{pt}, {k} shots, {per['dataset'].nunique()}-dataset average\n",
                Table(heads, _interleave(rows, ref_rows), bold=(2, 3, 4, 5))]
        out += across_datasets(ctx.unc, entries, {d: Stat.hm([(d, "base")], [(d, "new")]) for d in ds}, titles,
                               "### HM across datasets: mean rank and pairwise tests")
        out += _hm_per_dataset(ctx, proto, order, sec, per[per["shots"].isin([k, 0])], bb, pt, st[4])
    return out


def _hm_per_dataset(ctx: Ctx, proto: Protocol, order: list[str], sec: pd.DataFrame, per: pd.DataFrame, bb: str,
                    pt: str, avg_stat: Stat) -> list[Block]:
    datasets = per.drop_duplicates("dataset").set_index("dataset").loc[dataset_order(per["dataset"])].reset_index()
    names, dtitles = list(datasets["dataset"]), list(datasets["dataset_title"])
    heads = ["Method"] + dtitles + ["**Avg**"]
    rows = []
    mines = {m: g.set_index("dataset") for m, g in per.groupby("method")}
    for m in order:
        r = sec.loc[m]
        mine = mines.get(m, per.iloc[:0].set_index("dataset"))
        cells = [r["method_title"]] + [f2(mine["hm"].get(d)) for d in names] + [f2(r["hm"])]
        values = {i + 1: mine["hm"].get(d, math.nan) for i, d in enumerate(names)} | {len(names) + 1: r["hm"]}
        marks = {i + 1 for i, d in enumerate(names) if d in mine.index and mine.loc[d, "partial"]}
        rows.append(((bb, pt, proto.name, m, int(r["shots"])),
                     Row(cells, values, marks | ({len(names) + 1} if r["partial"] else set()))))
    columns = {i + 1: Stat.hm([(d, "base")], [(d, "new")]) for i, d in enumerate(names)} | {len(names) + 1: avg_stat}
    annotate(ctx, rows, columns)
    lines: list[Block] = ["### HM per dataset\n", Table(heads, [r for _, r in rows], bold=tuple(range(1, len(names) + 2))),
                          "<details><summary>Base / New / HM per dataset</summary>\n"]
    for d, title in zip(names, dtitles):
        sub = per[per["dataset"] == d].sort_values("hm", ascending=False)
        titles = dict(zip(sub["method"], sub["method_title"]))
        heads = ["Method", "Base", "New", "HM", "Seeds", "Δ vs reported (B / N / HM)"]
        drows = [(r.method, Row([r.method_title, pm(r.base_mean, r.base_std), pm(r.new_mean, r.new_std), f2(r.hm),
                                 f"{r.n}/{r.n_planned}", ""], {1: r.base_mean, 2: r.new_mean, 3: r.hm},
                                {1, 2, 3} if r.partial else set())) for r in sub.itertuples()]
        annotate(ctx, [((bb, pt, proto.name, m, int(s)), row) for (m, row), s in zip(drows, sub["shots"])],
                 {1: Stat.mean([(d, "base")]), 2: Stat.mean([(d, "new")]), 3: Stat.hm([(d, "base")], [(d, "new")])})
        refs = ctx.refs(proto.name, bb, pt, d, int(sub["shots"].max()))
        refs = refs[refs["method"].isin(sub["method"])]
        ref_rows = _ref_rows(ctx, refs, ["base", "new", "hm"], titles, list(sub["method"]), len(heads), 1)
        lines += [f"#### {title}\n", Table(heads, _interleave(drows, ref_rows), bold=(1, 2, 3))]
    return lines + ["</details>\n"]


def fewshot_section(ctx: Ctx, proto: Protocol, bb: str, pt: str) -> list[Block]:
    avg, per = sel(ctx.tables[proto.tables[1]], bb, pt), sel(ctx.tables[proto.tables[0]], bb, pt)
    if avg.empty:
        return []
    ks, ev = sorted(avg["shots"].unique()), proto.own_evals[0]
    all_ds = sorted(per["dataset"].unique())
    stat = Stat.mean([(d, ev) for d in all_ds])
    titles = dict(zip(avg["method"], avg["method_title"]))
    top = avg.sort_values("shots").groupby("method").agg(k=("shots", "max"), last=("acc", "last"))
    rank_entries = {m: (bb, pt, proto.name, m, int(r["k"])) for m, r in top.iterrows() if r["k"] in (ks[-1], 0)}
    order, ranks = _rank_order(ctx, rank_entries, stat, top["last"].to_dict())
    order += list(top.drop(index=order).sort_values(["k", "last"], ascending=False).index)
    heads = ["Rank", "Method"] + [f"K={k}" for k in ks] + ["Runs", f"Δ vs reported (K={'/'.join(map(str, ks))})"]
    rows, cols = [], {}
    by_method = {m: g.set_index("shots") for m, g in avg.groupby("method")}
    for m in order:
        mine = by_method[m]
        cells = [str(ranks[m]) if ranks.get(m) else DASH, titles[m]]
        cells += [pm(mine["acc"].get(k), mine["std"].get(k)) for k in ks]
        marks = {i + 2 for i, k in enumerate(ks) if k in mine.index and mine.loc[k, "partial"]}
        values = {0: -(ranks.get(m) or math.inf)} | {i + 2: mine["acc"].get(k, math.nan) for i, k in enumerate(ks)}
        rows.append((m, Row(cells + [ctx.run_str(bb, pt, proto.name, m, ks), ""], values, marks)))
    for i, k in enumerate(ks):                  # one column per K: its entries are the methods run at that K
        cols[i + 2] = [((bb, pt, proto.name, m, int(k)), row) for m, row in rows]
    for col, pairs in cols.items():
        annotate(ctx, pairs, {col: stat})
    refs = ctx.refs(proto.name, bb, pt, "average")
    refs = refs.assign(eval=refs["shots"].map(lambda k: f"K={k}")) if len(refs) else refs
    ref_order = order + list(refs.sort_values("reported", ascending=False)["method"]) if len(refs) else order
    ref_rows = _ref_rows(ctx, refs, [f"K={k}" for k in ks], titles, list(dict.fromkeys(ref_order)), len(heads), 2)
    n_ds = per["dataset"].nunique()
    out: list[Block] = [f"## {proto.title} — {bb}/{pt}, top-1 % on all classes, mean ± std over seeds "
                        "[95% interval]\n", f"### Average over {n_ds} datasets\n",
                        Table(heads, _interleave(rows, ref_rows), bold=tuple(range(2, len(ks) + 2)))]
    datasets = per.drop_duplicates("dataset").set_index("dataset").loc[dataset_order(per["dataset"])].reset_index()
    names = list(datasets["dataset"])
    for k in sorted(s for s in ks if s > 0) or [0]:
        sub = per[per["shots"].isin([k, 0])]
        heads = ["Method"] + list(datasets["dataset_title"]) + ["**Avg**"]
        krows = []
        mines = {m: g.set_index("dataset") for m, g in sub.groupby("method")}
        avgs = {m: g.iloc[0] for m, g in avg[avg["shots"].isin([k, 0])].groupby("method")}
        for m in [m for m in order if m in mines]:
            mine, a = mines[m], avgs[m]
            cells = [titles[m]] + [pm(mine["mean"].get(d), mine["std"].get(d)) for d in names] + [f2(a["acc"])]
            values = {i + 1: mine["mean"].get(d, math.nan) for i, d in enumerate(names)} | {len(names) + 1: a["acc"]}
            marks = {i + 1 for i, d in enumerate(names) if d in mine.index and mine.loc[d, "partial"]}
            krows.append(((bb, pt, proto.name, m, int(a["shots"])),
                          Row(cells, values, marks | ({len(names) + 1} if a["partial"] else set()))))
        annotate(ctx, krows, {i + 1: Stat.mean([(d, ev)]) for i, d in enumerate(names)} | {len(names) + 1: stat})
        out += [f"### K = {k}\n", Table(heads, [r for _, r in krows], bold=tuple(range(1, len(names) + 2)))]
        entries = {m: (bb, pt, proto.name, m, int(avgs[m]["shots"])) for m in order if m in mines}
        out += across_datasets(ctx.unc, entries,
                               {d: Stat.mean([(d, ev)]) for d in names}, titles,
                               f"#### K = {k} across datasets: mean rank and pairwise tests")
    return out


def transfer_section(ctx: Ctx, proto: Protocol, bb: str, pt: str) -> list[Block]:
    table = sel(ctx.tables[proto.tables[0]], bb, pt)
    out: list[Block] = []
    for source, src in table.groupby("dataset"):
        for k in sorted(s for s in src["shots"].unique() if s > 0) or [0]:
            sec = src[src["shots"].isin([k, 0])]
            targets = [e for e in dataset_order(sec["eval"]) if e not in (*proto.own_evals, "target_avg")]
            evals = list(proto.own_evals) + targets + (["target_avg"] if targets else [])
            etitles = dict(zip(sec["eval"], sec["eval_title"]))
            heads = ["Method", f"Source ({sec['dataset_title'].iloc[0]})"] + [etitles[e] for e in evals[1:]]
            heads += ["Runs", "Δ vs reported (source / target avg)"]
            wide = sec.pivot_table(index="method", columns="eval", values="mean", aggfunc="first")
            part = sec.groupby(["method", "eval"])["partial"].any()
            std = sec.set_index(["method", "eval"])["std"]
            order = wide.sort_values(evals[-1], ascending=False).index.tolist()
            titles = dict(zip(sec["method"], sec["method_title"]))
            shots = sec.groupby("method")["shots"].max().to_dict()
            rows = []
            for m in order:
                cells = [titles[m]] + [pm(wide.loc[m].get(e), std.get((m, e))) for e in evals]
                marks = {i + 1 for i, e in enumerate(evals) if part.get((m, e), False)}
                values = {i + 1: wide.loc[m].get(e, math.nan) for i, e in enumerate(evals)}
                rows.append((m, Row(cells + [ctx.run_str(bb, pt, proto.name, m, [shots[m]]), ""], values, marks)))
            columns = {i + 1: Stat.mean([(source, t) for t in targets] if e == "target_avg" else [(source, e)])
                       for i, e in enumerate(evals)}
            annotate(ctx, [((bb, pt, proto.name, m, int(shots[m])), row) for m, row in rows], columns)
            refs = ctx.refs(proto.name, bb, pt, source, k)
            refs = refs[refs["eval"].isin([*proto.own_evals, "target_avg"]) | refs["eval"].isin(targets)]
            ref_rows = _ref_rows(ctx, refs, evals, titles, list(dict.fromkeys(order + list(refs["method"]))),
                                 len(heads), 1, delta_evals=[evals[0], evals[-1]])
            out += [f"## {proto.title} — {bb}/{pt}, trained on {sec['dataset_title'].iloc[0]} "
                    f"({k} shots)\n", Table(heads, _interleave(rows, ref_rows), bold=tuple(range(1, len(evals) + 1)))]
    return out


def protocol_section(ctx: Ctx, proto: Protocol, bb: str, pt: str) -> list[Block]:
    """`proto`'s leaderboard section: ranked by HM (base-to-new), by the largest K (few-shot), or source and targets."""
    section = transfer_section if proto.transfer else base2new_section if proto.class_split else fewshot_section
    return section(ctx, proto, bb, pt)
