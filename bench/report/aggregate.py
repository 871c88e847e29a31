"""The leaderboard's summary tables, computed from the tidy frame of `bench.report.collect.load_results`.

Usage:
    >>> from bench.report.collect import load_results
    >>> from bench.report.aggregate import fewshot_table, base2new_table, base2new_average
    >>> res = load_results("results")
    >>> b2n = base2new_table(res.frame, res.expected)   # per dataset: Base/New seed means, HM of the means
    >>> base2new_average(b2n, res.frame)                # HM(avg Base, avg New), the CoCoOp convention

Conventions (the HM as CoCoOp reports it, https://arxiv.org/abs/2203.05557): std is the sample std over seeds
(ddof=1); per dataset, HM is taken from the seed-averaged Base and New; the average row is HM of the
dataset-averaged Base and New. Only completed
cells enter the tables; failed, malformed and missing cells are counted (`Results.completeness()`). Each value
also gets a 95 % interval over seeds and test images (`*_lo`, `*_hi`; bench.report.uncertainty).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.protocols import PROTOCOLS, Protocol, transfer_protocol
from bench.report.collect import Results, completed, eval_title
from bench.report.mdtable import format_hours

GROUP = ["backbone", "pretrained", "protocol", "method", "dataset", "shots"]


def dataset_order(names: Any) -> list[str]:
    """Dataset names in suite order (coop11 first: imagenet, caltech101, ...); others alphabetically after."""
    try:
        from bench import cards
        listed = [d for spec in cards.suites().values() for d in (spec.get("datasets") or [])]
    except Exception:  # noqa: BLE001 - ordering is cosmetic
        listed = []
    pos: dict[str, int] = {}
    for i, d in enumerate(listed):
        pos.setdefault(d, i)
    return sorted(set(names), key=lambda d: (pos.get(d, len(listed)), d))



# ---------------------------------------------------------------------------------------------- summary tables


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2BN/(B+N); NaN when either is missing."""
    if base is None or new is None or pd.isna(base) or pd.isna(new):
        return math.nan
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)


def planned_seeds(frame: pd.DataFrame, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Seeds planned per GROUP: from the sweeps where they list the group, else the seeds this method has
    anywhere in the same (backbone, pretrained, protocol) section, completed or failed. Columns GROUP + n_planned."""
    groups = completed(frame)[GROUP].drop_duplicates()
    fallback = (frame.groupby(["backbone", "pretrained", "protocol", "method"])["seed"].nunique()
                .rename("n_fallback").reset_index())
    out = groups.merge(fallback, on=["backbone", "pretrained", "protocol", "method"], how="left")
    if expected is not None and len(expected):
        plan = expected.groupby(GROUP)["seed"].nunique().rename("n_plan").reset_index()
        out = out.merge(plan, on=GROUP, how="left")
        out["n_planned"] = out["n_plan"].fillna(out["n_fallback"])
    else:
        out["n_planned"] = out["n_fallback"]
    return out[GROUP + ["n_planned"]].astype({"n_planned": "int64"})


def seed_stats(frame: pd.DataFrame, protocol: str, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per GROUP and eval: mean, std (sample, ddof=1), n seeds, n_planned, partial (n < n_planned)."""
    section = frame[frame["protocol"] == protocol]
    done = completed(section)
    grouped = done.groupby(GROUP + ["eval"])["acc"]
    out = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}).reset_index()
    out = out.merge(planned_seeds(section, expected), on=GROUP, how="left")
    out["partial"] = out["n"] < out["n_planned"]
    return _with_titles(out, done)


def _with_titles(table: pd.DataFrame, done: pd.DataFrame) -> pd.DataFrame:
    titles = done.groupby("method")["method_title"].first()
    dtitles = done.groupby("dataset")["dataset_title"].first()
    table.insert(table.columns.get_loc("method") + 1, "method_title", table["method"].map(titles))
    table.insert(table.columns.get_loc("dataset") + 1, "dataset_title", table["dataset"].map(dtitles))
    return table


FEWSHOT, BASE2NEW = PROTOCOLS["fewshot"], PROTOCOLS["base2new"]


def fewshot_table(frame: pd.DataFrame, expected: pd.DataFrame | None = None, proto: Protocol = FEWSHOT) -> pd.DataFrame:
    """Few-shot accuracy per method × dataset × K: mean ± sample std over seeds, n, n_planned, partial."""
    stats = seed_stats(frame, proto.name, expected)
    return stats[stats["eval"] == proto.own_evals[0]].drop(columns=["protocol", "eval"]).reset_index(drop=True)


def fewshot_average(table: pd.DataFrame, frame: pd.DataFrame | None = None, proto: Protocol = FEWSHOT) -> pd.DataFrame:
    """Per method × K: the arithmetic mean over datasets of the per-dataset seed means.

    `n_datasets` counts the datasets averaged; `partial` is set when a dataset of the section is missing or
    has fewer seeds than planned. With `frame`, `std` is the sample std over seeds of the per-seed dataset
    average (only seeds present on every dataset; NaN otherwise)."""
    keys = ["backbone", "pretrained", "method", "method_title", "shots"]
    out = _average(table, keys, {"mean": "acc"})
    if frame is not None:
        out = out.merge(_seedwise_std(frame, proto.name, {proto.own_evals[0]: "std"}), on=_KEYS_NT, how="left")
    return out


_KEYS_NT = ["backbone", "pretrained", "method", "shots"]


def _average(table: pd.DataFrame, keys: list[str], cols: dict[str, str]) -> pd.DataFrame:
    section = table.groupby(["backbone", "pretrained"])["dataset"].nunique().rename("n_section")
    grouped = table.groupby(keys)
    out = grouped[list(cols)].mean().rename(columns=cols)
    out["n_datasets"] = grouped["dataset"].nunique()
    out["datasets"] = grouped["dataset"].agg(lambda s: ",".join(sorted(s)))
    out["any_partial"] = grouped["partial"].any()
    out = out.reset_index().merge(section.reset_index(), on=["backbone", "pretrained"], how="left")
    out["partial"] = out["any_partial"] | (out["n_datasets"] < out["n_section"])
    return out.drop(columns=["any_partial", "n_section"])


def _seedwise_std(frame: pd.DataFrame, protocol: str, evals: dict[str, str]) -> pd.DataFrame:
    """Sample std over seeds of the per-seed dataset average, using only seeds present on every dataset."""
    done = completed(frame)
    done = done[(done["protocol"] == protocol) & done["eval"].isin(list(evals))]
    out = None
    for name, col in evals.items():
        sub = done[done["eval"] == name]
        if sub.empty:
            continue
        wide = sub.pivot_table(index=_KEYS_NT + ["seed"], columns="dataset", values="acc", aggfunc="mean")
        n_ds = sub.groupby(_KEYS_NT)["dataset"].nunique()
        per_seed = wide.mean(axis=1, skipna=True)
        covered = wide.notna().sum(axis=1)
        target = n_ds.reindex(per_seed.index.droplevel("seed")).to_numpy()
        per_seed = per_seed[covered.to_numpy() == target]
        std = per_seed.groupby(level=_KEYS_NT).std(ddof=1).rename(col).reset_index()
        out = std if out is None else out.merge(std, on=_KEYS_NT, how="outer")
    return out if out is not None else pd.DataFrame(columns=_KEYS_NT + list(evals.values()))


def base2new_table(frame: pd.DataFrame, expected: pd.DataFrame | None = None, proto: Protocol = BASE2NEW
                   ) -> pd.DataFrame:
    """Per method × dataset: Base and New each averaged over seeds (± sample std), HM of those two means."""
    stats = seed_stats(frame, proto.name, expected)
    keys = ["backbone", "pretrained", "method", "method_title", "dataset", "dataset_title", "shots"]
    parts = []
    for name in proto.own_evals:
        sub = stats[stats["eval"] == name].set_index(keys)
        parts.append(sub[["mean", "std", "n", "n_planned", "partial"]].add_prefix(f"{name}_"))
    out = parts[0].join(parts[1], how="outer").reset_index()
    out["hm"] = [harmonic_mean(b, n) for b, n in zip(out["base_mean"], out["new_mean"])]
    out["n"] = out[["base_n", "new_n"]].min(axis=1).fillna(0).astype("int64")
    out["n_planned"] = out[["base_n_planned", "new_n_planned"]].max(axis=1).fillna(0).astype("int64")
    out["partial"] = out["base_partial"].fillna(True).astype(bool) | out["new_partial"].fillna(True).astype(bool)
    return out.drop(columns=[c for c in out.columns if c.endswith(("_n_planned", "_partial"))])


def base2new_average(table: pd.DataFrame, frame: pd.DataFrame | None = None, proto: Protocol = BASE2NEW
                     ) -> pd.DataFrame:
    """Per method: Base and New averaged over datasets, HM = HM(avg Base, avg New) — never the mean of HMs."""
    keys = ["backbone", "pretrained", "method", "method_title", "shots"]
    out = _average(table, keys, {"base_mean": "base", "new_mean": "new"})
    out["hm"] = [harmonic_mean(b, n) for b, n in zip(out["base"], out["new"])]
    if frame is not None:
        out = out.merge(_seedwise_std(frame, proto.name, {e: f"{e}_std" for e in proto.own_evals}),
                        on=_KEYS_NT, how="left")
    return out


def transfer_table(frame: pd.DataFrame, protocol: str, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cross-dataset (xd) or domain generalisation (dg): per method × source dataset × K, the source accuracy,
    each target and `target_avg` (mean of the target seed means), each as one row of the long table."""
    own = transfer_protocol(protocol).own_evals
    stats = seed_stats(frame, protocol, expected).drop(columns=["protocol"])
    keys = ["backbone", "pretrained", "method", "method_title", "dataset", "dataset_title", "shots"]
    targets = stats[~stats["eval"].isin(own)]
    if len(targets):
        avg = targets.groupby(keys).agg(mean=("mean", "mean"), n=("n", "min"), n_planned=("n_planned", "max"),
                                        partial=("partial", "any")).reset_index()
        avg["eval"], avg["std"] = "target_avg", math.nan
        stats = pd.concat([stats, avg[stats.columns.drop("eval_title", errors="ignore")]], ignore_index=True)
    stats["eval_title"] = stats["eval"].map(eval_title)
    return stats.reset_index(drop=True)


def protocol_tables(proto: Protocol, frame: pd.DataFrame, expected: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """The summary tables `proto` makes (`proto.tables`): per dataset and averaged, or source and targets."""
    if proto.transfer:
        made = [transfer_table(frame, proto.name, expected)]
    elif proto.class_split:
        per = base2new_table(frame, expected, proto)
        made = [per, base2new_average(per, frame, proto)]
    else:
        per = fewshot_table(frame, expected, proto)
        made = [per, fewshot_average(per, frame, proto)]
    return dict(zip(proto.tables, made))


def cost_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method: median trainable params, GPU-/CPU-hours ((train_s+eval_s)/3600 summed over completed cells;
    GPU when the device starts with "cuda"), mean images/s, max peak memory, number of cells."""
    cells = completed(frame).drop_duplicates("cell_id").copy()
    hours = (cells["train_s"].fillna(0) + cells["eval_s"].fillna(0)) / 3600.0
    gpu = cells["device"].fillna("").astype(str).str.startswith("cuda")
    cells["gpu_h"], cells["cpu_h"] = hours.where(gpu, 0.0), hours.where(~gpu, 0.0)
    grouped = cells.groupby(["backbone", "pretrained", "method"])
    out = pd.DataFrame({
        "method_title": grouped["method_title"].first(),
        "trainable_params": grouped["trainable_params"].median(),
        "gpu_h": grouped["gpu_h"].sum(), "cpu_h": grouped["cpu_h"].sum(),
        "images_per_s": grouped["images_per_s"].mean(), "peak_mem_mb": grouped["peak_mem_mb"].max(),
        "cells": grouped["cell_id"].count(),
    }).reset_index()
    out["cost"] = [format_hours(g, c) for g, c in zip(out["gpu_h"], out["cpu_h"])]
    return out


def summaries(results: Results, intervals: Any = True) -> dict[str, pd.DataFrame]:
    """Every summary table that has data, by name: fewshot, fewshot_avg, base2new, base2new_avg, xd, dg, cost.

    With `intervals` (True, or a `bench.report.uncertainty.Uncertainty` to reuse), each value gets its 95 %
    interval in `<value>_lo`/`<value>_hi` columns (bench.report.intervals.add_intervals)."""
    frame, exp = results.frame, results.expected
    protocols = set(completed(frame)["protocol"])
    out: dict[str, pd.DataFrame] = {}
    for proto in PROTOCOLS.values():
        if proto.name in protocols:
            out.update(protocol_tables(proto, frame, exp))
    if intervals is not False and intervals is not None and out:
        from bench.report.intervals import add_intervals
        from bench.report.uncertainty import Uncertainty

        add_intervals(out, intervals if isinstance(intervals, Uncertainty) else Uncertainty(frame))
    if protocols:
        out["cost"] = cost_table(frame)
    return out
