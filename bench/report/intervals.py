"""The summary tables' intervals: `<value>_lo`/`<value>_hi` and `ci_basis` beside every value.

Usage:
    >>> from bench.report.aggregate import summaries
    >>> summaries(load_results("results"))["fewshot"][["mean", "mean_lo", "mean_hi", "ci_basis"]]

(bench.report.aggregate calls `add_intervals`; the numbers come from bench.report.uncertainty.)
"""

from __future__ import annotations

import pandas as pd

from bench.report.uncertainty import ENTRY, Entry, Stat, Uncertainty


def _entry(rec: dict, protocol: str) -> Entry:
    return tuple(protocol if c == "protocol" else int(rec[c]) if c == "shots" else rec[c] for c in ENTRY)


def _set(table: pd.DataFrame, col: str, values: list[tuple[float, float]]) -> None:
    table[f"{col}_lo"] = [v[0] for v in values]
    table[f"{col}_hi"] = [v[1] for v in values]


def add_intervals(tables: dict[str, pd.DataFrame], unc: Uncertainty) -> dict[str, pd.DataFrame]:
    """Add `<value>_lo`/`<value>_hi` (95 % interval, %) beside each value of the summary tables
    (`bench.report.aggregate.summaries`), and `ci_basis` (seeds+images, images, seeds). In place; returns them."""
    def fill(t: pd.DataFrame, protocol: str, cols: dict[str, list[Stat]], datasets: list[list[str]]) -> None:
        entries = [_entry(r, protocol) for r in t[[c for c in ENTRY if c != "protocol"]].to_dict("records")]
        for col, stats_ in cols.items():
            _set(t, col, unc.intervals(list(zip(entries, stats_))))
        t["ci_basis"] = [unc.basis(e, ds) for e, ds in zip(entries, datasets)]

    if "fewshot" in tables:
        t = tables["fewshot"]
        ds = [[d] for d in t["dataset"]]
        fill(t, "fewshot", {"mean": [Stat.mean([(d[0], "all")]) for d in ds]}, ds)
    if "fewshot_avg" in tables:
        t = tables["fewshot_avg"]
        ds = [_ds(r) for r in t.to_dict("records")]
        fill(t, "fewshot", {"acc": [Stat.mean([(d, "all") for d in x]) for x in ds]}, ds)
    for name, per in (("base2new", True), ("base2new_avg", False)):
        if name in tables:
            t = tables[name]
            ds = [[d] for d in t["dataset"]] if per else [_ds(r) for r in t.to_dict("records")]
            fill(t, "base2new", {
                "base_mean" if per else "base": [Stat.mean([(d, "base") for d in x]) for x in ds],
                "new_mean" if per else "new": [Stat.mean([(d, "new") for d in x]) for x in ds],
                "hm": [Stat.hm([(d, "base") for d in x], [(d, "new") for d in x]) for x in ds]}, ds)
    for proto in ("xd", "dg"):
        if proto in tables:
            t = tables[proto]
            recs = t.to_dict("records")
            targets = t[t["eval"].ne("source") & t["eval"].ne("target_avg")].groupby(
                ["backbone", "pretrained", "method", "dataset", "shots"])["eval"].agg(list).to_dict()
            key = [(r["backbone"], r["pretrained"], r["method"], r["dataset"], r["shots"]) for r in recs]
            stats_ = [Stat.mean([(r["dataset"], e) for e in (targets.get(k, []) if r["eval"] == "target_avg"
                                                              else [r["eval"]])]) for r, k in zip(recs, key)]
            fill(t, proto, {"mean": stats_}, [[r["dataset"]] for r in recs])
    return tables


def _ds(rec: dict) -> list[str]:
    return [d for d in str(rec.get("datasets") or "").split(",") if d]
