"""Read a results tree into one tidy DataFrame, and compute the leaderboard's summary tables from it.

Usage:
    >>> from pathlib import Path
    >>> from bench.aggregate import load_results, fewshot_table, base2new_table, base2new_average
    >>> res = load_results(Path("results"))       # <root>/runs/**/result.json + <root>/sweeps/*.json
    >>> res.frame.columns[:4].tolist()             # long format: one row per (cell, evaluation)
    ['cell_id', 'status', 'method', 'method_title']
    >>> b2n = base2new_table(res.frame, res.expected)   # per dataset: Base/New seed means, HM of the means
    >>> base2new_average(b2n, res.frame)                # HM(avg Base, avg New), the CoCoOp convention

Conventions (methods-and-protocol.md §3): std is the sample std over seeds (ddof=1); per dataset, HM is taken
from the seed-averaged Base and New; the average row is HM of the dataset-averaged Base and New. Only completed
cells enter the tables; failed, malformed and missing cells are counted (`Results.completeness()`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.mdtable import format_hours

logger = logging.getLogger(__name__)

KEY = ["backbone", "pretrained", "protocol", "method", "dataset", "shots", "seed"]
GROUP = ["backbone", "pretrained", "protocol", "method", "dataset", "shots"]
COLUMNS = ["cell_id", "status", "method", "method_title", "dataset", "dataset_title", "suite", "protocol", "shots",
           "seed", "backbone", "pretrained", "eval", "eval_title", "acc", "macro_f1", "n", "trainable_params",
           "total_params", "train_s", "eval_s", "images_per_s", "peak_mem_mb", "device", "git_sha", "finished_at",
           "path"]
EXPECTED_COLUMNS = ["cell_id", "method", "dataset", "protocol", "shots", "seed", "backbone", "pretrained"]
PROTOCOLS = ("fewshot", "base2new", "xd", "dg")
EVAL_TITLES = {"all": "All", "base": "Base", "new": "New", "source": "Source", "target_avg": "Target avg"}
_WARN_LINES = 5


@dataclass
class Results:
    """A loaded results tree: the long frame plus what could not go into it."""

    root: Path
    frame: pd.DataFrame                 # completed rows (one per evaluation) + failed cells (one row, eval NA)
    expected: pd.DataFrame              # the union of the sweeps' cells (EXPECTED_COLUMNS); empty without sweeps
    malformed: list[str] = field(default_factory=list)   # "path: reason" for each skipped file
    superseded: list[str] = field(default_factory=list)  # ids of older cells replaced by a newer one (same KEY)

    @property
    def completed(self) -> pd.DataFrame:
        return completed(self.frame)

    @property
    def failed(self) -> pd.DataFrame:
        """One row per failed cell."""
        return self.frame[self.frame["status"] == "failed"].drop_duplicates("cell_id")

    @property
    def missing(self) -> pd.DataFrame:
        """Expected cells (from the sweeps) with no result.json at all."""
        if self.expected.empty:
            return self.expected
        seen = set(self.frame["cell_id"]) | set(self.superseded)
        return self.expected[~self.expected["cell_id"].isin(seen)]

    def completeness(self) -> dict[str, int]:
        """Counts of cells: done (completed, in the plan when there is one), expected, failed, missing, ..."""
        done_ids = set(self.completed["cell_id"])
        if self.expected.empty:
            expected = len(done_ids) + len(self.failed)
            done, extra = len(done_ids), 0
        else:
            planned = set(self.expected["cell_id"])
            expected, done, extra = len(planned), len(done_ids & planned), len(done_ids - planned)
        return {"done": done, "expected": expected, "failed": len(self.failed), "missing": len(self.missing),
                "malformed": len(self.malformed), "unplanned": extra, "superseded": len(self.superseded)}


def load_results(root: Path | str, strict: bool = False) -> Results:
    """Read `<root>/runs/**/result.json` (never descending into `ckpt/`) and `<root>/sweeps/*.json`.

    A malformed file is skipped, counted in `Results.malformed` and logged as a warning; with `strict=True`
    it raises a one-line BenchError naming the file instead.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"results folder {root} does not exist; pass the --results root of `bench run`")
    runs, sweeps = root / "runs", root / "sweeps"
    if not runs.is_dir() and not sweeps.is_dir():
        raise BenchError(f"{root} holds neither runs/ nor sweeps/; is it a bench results folder?")
    malformed: list[str] = []
    cells: dict[tuple, dict[str, Any]] = {}
    superseded: list[str] = []
    for path in _find_results(runs):
        try:
            doc = _read_result(path)
        except ValueError as err:
            _skip(malformed, f"{path}: {err}", strict)
            continue
        key = tuple(doc["config"][k] for k in KEY)
        old = cells.get(key)
        if old is not None:
            keep, drop = (doc, old) if _newer(doc, old) else (old, doc)
            superseded.append(drop["cell_id"])
            doc = keep
        cells[key] = doc
    rows = [row for doc in cells.values() for row in _rows(doc)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("shots", "seed"):
        frame[col] = frame[col].astype("int64")
    expected = _read_sweeps(sweeps, malformed, strict)
    _warn(malformed, len(superseded))
    return Results(root, frame, expected, malformed, superseded)


def _find_results(runs: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(runs):
        if "result.json" in filenames:
            found.append(os.path.join(dirpath, "result.json"))
            dirnames[:] = []                       # a cell folder: nothing below it is a result
        else:
            dirnames[:] = sorted(d for d in dirnames if d != "ckpt" and not d.startswith("."))
    return found


def _skip(malformed: list[str], line: str, strict: bool) -> None:
    if strict:
        raise BenchError(f"malformed {line}")
    malformed.append(line)


def _warn(malformed: list[str], superseded: int) -> None:
    for line in malformed[:_WARN_LINES]:
        logger.warning("skipped malformed %s", line)
    if len(malformed) > _WARN_LINES:
        logger.warning("... and %d more malformed files skipped", len(malformed) - _WARN_LINES)
    if superseded:
        logger.warning("%d older result(s) superseded by a newer cell with the same method/dataset/protocol/"
                       "shots/seed/backbone", superseded)


def _read_result(path: str) -> dict[str, Any]:
    """Parse and check one result.json; any problem is a ValueError whose message is the reason."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"unreadable ({err})") from None
    if not isinstance(doc, dict):
        raise ValueError("top level is not an object")
    if doc.get("schema_version") != 1:
        raise ValueError(f"schema_version {doc.get('schema_version')!r} is not supported (expected 1)")
    if doc.get("status") not in ("completed", "failed"):
        raise ValueError(f"status {doc.get('status')!r} is neither 'completed' nor 'failed'")
    cfg = doc.get("config")
    if not isinstance(cfg, dict):
        raise ValueError("'config' is missing")
    absent = [k for k in KEY if k not in cfg]
    if absent or not doc.get("cell_id"):
        raise ValueError(f"missing field(s) {', '.join(absent or ['cell_id'])}")
    if doc["status"] == "completed":
        metrics = doc.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise ValueError("completed cell without 'metrics'")
        for name, m in metrics.items():
            if not isinstance(m, dict) or not isinstance(m.get("acc"), (int, float)):
                raise ValueError(f"metrics.{name}.acc is missing or not a number")
    doc["_path"] = path
    return doc


def _newer(doc: dict[str, Any], old: dict[str, Any]) -> bool:
    """Which of two cells with the same KEY wins: completed beats failed, then the later finished_at."""
    rank = (doc["status"] == "completed", str(doc.get("finished_at") or ""))
    return rank > (old["status"] == "completed", str(old.get("finished_at") or ""))


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    cfg, cost, env = doc["config"], doc.get("cost") or {}, doc.get("env") or {}
    base = {
        "cell_id": doc["cell_id"], "status": doc["status"], "method": cfg["method"],
        "method_title": cfg.get("method_title") or cfg["method"], "dataset": cfg["dataset"],
        "dataset_title": cfg.get("dataset_title") or cfg["dataset"], "suite": cfg.get("suite"),
        "protocol": cfg["protocol"], "shots": int(cfg["shots"]), "seed": int(cfg["seed"]),
        "backbone": cfg["backbone"], "pretrained": cfg["pretrained"],
        "trainable_params": cost.get("trainable_params"), "total_params": cost.get("total_params"),
        "train_s": cost.get("train_s"), "eval_s": cost.get("eval_s"), "images_per_s": cost.get("images_per_s"),
        "peak_mem_mb": cost.get("peak_mem_mb"), "device": cost.get("device"), "git_sha": env.get("git_sha"),
        "finished_at": doc.get("finished_at"), "path": doc["_path"],
    }
    if doc["status"] != "completed":
        return [{**base, "eval": None, "eval_title": None, "acc": math.nan, "macro_f1": math.nan, "n": None}]
    return [{**base, "eval": name, "eval_title": eval_title(name), "acc": float(m["acc"]),
             "macro_f1": m.get("macro_f1", math.nan), "n": m.get("n")}
            for name, m in doc["metrics"].items()]


def eval_title(name: str) -> str:
    """Display name of an evaluation: All/Base/New/Source, or a target dataset's card title."""
    if name in EVAL_TITLES:
        return EVAL_TITLES[name]
    return dataset_title(name)


def dataset_title(name: str) -> str:
    """A dataset's card title, or the name itself when there is no card."""
    try:
        from bench import cards
        return cards.dataset_card(name).title
    except Exception:  # noqa: BLE001 - a title is cosmetic; never fail aggregation over it
        return name


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


def _read_sweeps(sweeps: Path, malformed: list[str], strict: bool) -> pd.DataFrame:
    cells: dict[str, dict[str, Any]] = {}
    paths = sorted((p for p in os.scandir(sweeps) if p.name.endswith(".json")), key=lambda p: p.name) if sweeps.is_dir() else []
    for entry in paths:
        try:
            with open(entry.path, encoding="utf-8") as fh:
                doc = json.load(fh)
            listed = doc["cells"]
            for cell in listed:
                cells.setdefault(cell["cell_id"], {k: cell[k] for k in EXPECTED_COLUMNS})
        except (OSError, ValueError, KeyError, TypeError) as err:
            reason = f"missing key {err}" if isinstance(err, KeyError) else str(err)
            _skip(malformed, f"{entry.path}: {reason}", strict)
    frame = pd.DataFrame(list(cells.values()), columns=EXPECTED_COLUMNS)
    return frame.astype({"shots": "int64", "seed": "int64"}) if len(frame) else frame


# ---------------------------------------------------------------------------------------------- summary tables


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the rows of completed cells."""
    return frame[frame["status"] == "completed"]


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


def fewshot_table(frame: pd.DataFrame, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Few-shot accuracy per method × dataset × K: mean ± sample std over seeds, n, n_planned, partial."""
    stats = seed_stats(frame, "fewshot", expected)
    return stats[stats["eval"] == "all"].drop(columns=["protocol", "eval"]).reset_index(drop=True)


def fewshot_average(table: pd.DataFrame, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method × K: the arithmetic mean over datasets of the per-dataset seed means.

    `n_datasets` counts the datasets averaged; `partial` is set when a dataset of the section is missing or
    has fewer seeds than planned. With `frame`, `std` is the sample std over seeds of the per-seed dataset
    average (only seeds present on every dataset; NaN otherwise)."""
    keys = ["backbone", "pretrained", "method", "method_title", "shots"]
    out = _average(table, keys, {"mean": "acc"})
    if frame is not None:
        out = out.merge(_seedwise_std(frame, "fewshot", {"all": "std"}), on=_KEYS_NT, how="left")
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


def base2new_table(frame: pd.DataFrame, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method × dataset: Base and New each averaged over seeds (± sample std), HM of those two means."""
    stats = seed_stats(frame, "base2new", expected)
    keys = ["backbone", "pretrained", "method", "method_title", "dataset", "dataset_title", "shots"]
    parts = []
    for name in ("base", "new"):
        sub = stats[stats["eval"] == name].set_index(keys)
        parts.append(sub[["mean", "std", "n", "n_planned", "partial"]].add_prefix(f"{name}_"))
    out = parts[0].join(parts[1], how="outer").reset_index()
    out["hm"] = [harmonic_mean(b, n) for b, n in zip(out["base_mean"], out["new_mean"])]
    out["n"] = out[["base_n", "new_n"]].min(axis=1).fillna(0).astype("int64")
    out["n_planned"] = out[["base_n_planned", "new_n_planned"]].max(axis=1).fillna(0).astype("int64")
    out["partial"] = out["base_partial"].fillna(True).astype(bool) | out["new_partial"].fillna(True).astype(bool)
    return out.drop(columns=[c for c in out.columns if c.endswith(("_n_planned", "_partial"))])


def base2new_average(table: pd.DataFrame, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per method: Base and New averaged over datasets, HM = HM(avg Base, avg New) — never the mean of HMs."""
    keys = ["backbone", "pretrained", "method", "method_title", "shots"]
    out = _average(table, keys, {"base_mean": "base", "new_mean": "new"})
    out["hm"] = [harmonic_mean(b, n) for b, n in zip(out["base"], out["new"])]
    if frame is not None:
        out = out.merge(_seedwise_std(frame, "base2new", {"base": "base_std", "new": "new_std"}),
                        on=_KEYS_NT, how="left")
    return out


def transfer_table(frame: pd.DataFrame, protocol: str, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Cross-dataset (xd) or domain generalisation (dg): per method × source dataset × K, the source accuracy,
    each target and `target_avg` (mean of the target seed means), each as one row of the long table."""
    if protocol not in ("xd", "dg"):
        raise BenchError(f"transfer tables are for protocol xd or dg, not '{protocol}'")
    stats = seed_stats(frame, protocol, expected).drop(columns=["protocol"])
    keys = ["backbone", "pretrained", "method", "method_title", "dataset", "dataset_title", "shots"]
    targets = stats[stats["eval"] != "source"]
    if len(targets):
        avg = targets.groupby(keys).agg(mean=("mean", "mean"), n=("n", "min"), n_planned=("n_planned", "max"),
                                        partial=("partial", "any")).reset_index()
        avg["eval"], avg["std"] = "target_avg", math.nan
        stats = pd.concat([stats, avg[stats.columns.drop("eval_title", errors="ignore")]], ignore_index=True)
    stats["eval_title"] = stats["eval"].map(eval_title)
    return stats.reset_index(drop=True)


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


def summaries(results: Results) -> dict[str, pd.DataFrame]:
    """Every summary table that has data, by name: fewshot, fewshot_avg, base2new, base2new_avg, xd, dg, cost."""
    frame, exp = results.frame, results.expected
    protocols = set(completed(frame)["protocol"])
    out: dict[str, pd.DataFrame] = {}
    if "fewshot" in protocols:
        out["fewshot"] = fewshot_table(frame, exp)
        out["fewshot_avg"] = fewshot_average(out["fewshot"], frame)
    if "base2new" in protocols:
        out["base2new"] = base2new_table(frame, exp)
        out["base2new_avg"] = base2new_average(out["base2new"], frame)
    for proto in ("xd", "dg"):
        if proto in protocols:
            out[proto] = transfer_table(frame, proto, exp)
    if protocols:
        out["cost"] = cost_table(frame)
    return out
