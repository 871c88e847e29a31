"""The summary tables' intervals: `<value>_lo`/`<value>_hi` and `ci_basis` beside every value.

Usage:
    >>> from bench.report.aggregate import summaries
    >>> summaries(load_results("results"))["fewshot"][["mean", "mean_lo", "mean_hi", "ci_basis"]]

(bench.report.aggregate calls `add_intervals`; the numbers come from bench.report.uncertainty.)
"""

from __future__ import annotations

import pandas as pd

from bench.protocols import PROTOCOLS, Protocol
from bench.report.uncertainty import ENTRY, Entry, Stat, Uncertainty


def _entry(rec: dict, protocol: str) -> Entry:
    return tuple(protocol if c == "protocol" else int(rec[c]) if c == "shots" else rec[c] for c in ENTRY)


def _set(table: pd.DataFrame, col: str, values: list[tuple[float, float]]) -> None:
    table[f"{col}_lo"] = [v[0] for v in values]
    table[f"{col}_hi"] = [v[1] for v in values]


def add_intervals(tables: dict[str, pd.DataFrame], unc: Uncertainty) -> dict[str, pd.DataFrame]:
    """Add `<value>_lo`/`<value>_hi` (95 % interval, %) beside each value of the summary tables
    (`bench.report.aggregate.summaries`), and `ci_basis` (seeds+images, images, seeds). In place; returns them."""
    for proto in PROTOCOLS.values():
        for name, per_dataset in zip(proto.tables, (True, False)):
            if name in tables:
                _fill_protocol(tables[name], proto, per_dataset, unc)
    return tables


def _fill(t: pd.DataFrame, unc: Uncertainty, protocol: str, cols: dict[str, list[Stat]],
          datasets: list[list[str]]) -> None:
    entries = [_entry(r, protocol) for r in t[[c for c in ENTRY if c != "protocol"]].to_dict("records")]
    for col, stats_ in cols.items():
        _set(t, col, unc.intervals(list(zip(entries, stats_))))
    t["ci_basis"] = [unc.basis(e, ds) for e, ds in zip(entries, datasets)]


def _fill_protocol(t: pd.DataFrame, proto: Protocol, per_dataset: bool, unc: Uncertainty) -> None:
    """Intervals of one of `proto`'s tables: per dataset (its first table) or averaged over datasets (its second)."""
    if not proto.transfer:
        ds = [[d] for d in t["dataset"]] if per_dataset else [_ds(r) for r in t.to_dict("records")]
        if proto.class_split:
            base, new = proto.own_evals
            cols = {f"{base}_mean" if per_dataset else base: [Stat.mean([(d, base) for d in x]) for x in ds],
                    f"{new}_mean" if per_dataset else new: [Stat.mean([(d, new) for d in x]) for x in ds],
                    "hm": [Stat.hm([(d, base) for d in x], [(d, new) for d in x]) for x in ds]}
        else:
            cols = {"mean" if per_dataset else "acc": [Stat.mean([(d, proto.own_evals[0]) for d in x]) for x in ds]}
        _fill(t, unc, proto.name, cols, ds)
        return
    recs = t.to_dict("records")
    targets = t[~t["eval"].isin(proto.own_evals) & t["eval"].ne("target_avg")].groupby(
        ["backbone", "pretrained", "method", "dataset", "shots"])["eval"].agg(list).to_dict()
    key = [(r["backbone"], r["pretrained"], r["method"], r["dataset"], r["shots"]) for r in recs]
    stats_ = [Stat.mean([(r["dataset"], e) for e in (targets.get(k, []) if r["eval"] == "target_avg"
                                                      else [r["eval"]])]) for r, k in zip(recs, key)]
    _fill(t, unc, proto.name, {"mean": stats_}, [[r["dataset"]] for r in recs])


def _ds(rec: dict) -> list[str]:
    return [d for d in str(rec.get("datasets") or "").split(",") if d]
