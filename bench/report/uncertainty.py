"""Intervals, paired comparisons, ties with the best and grouped ranks for the leaderboard's numbers.

Usage:
    >>> from bench.report.collect import load_results
    >>> from bench.report.uncertainty import Uncertainty, Stat
    >>> unc = Uncertainty(load_results("results").frame)
    >>> a = ("ViT-B-16", "openai", "fewshot", "clipfit", 16)          # an entry: backbone, weights, protocol, method, K
    >>> stat = Stat.mean([("dtd", "all"), ("eurosat", "all")])        # the average over two datasets
    >>> unc.interval(a, stat)                                         # (lo, hi) in %, 95 %
    >>> unc.compare(a, ("ViT-B-16", "openai", "fewshot", "coop", 16), stat)    # Comparison: Δ, interval, p

A statistic (`Stat`) is a mean of (dataset, eval) accuracies, or the HM of two such means (Base and New); its
replicates are the same function of the per-dataset bootstrap replicates (bench.report.stats). Ties: the best
entry of a column (highest point value) is compared with every other entry by the paired bootstrap; Holm's
procedure over those comparisons at ALPHA; the entries not rejected are tied with the best (≈). Grouped ranks
repeat this: the best of the entries not yet ranked leads a group of those tied with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.report import stats
from bench.report.collect import completed

Entry = tuple[str, str, str, str, int]          # backbone, pretrained, protocol, method, shots
_ENTRY = ["backbone", "pretrained", "protocol", "method", "shots"]


@dataclass(frozen=True)
class Stat:
    """parts: one tuple of (dataset, eval) → their mean; two tuples → the HM of the two means."""

    parts: tuple[tuple[tuple[str, str], ...], ...]

    @classmethod
    def mean(cls, items) -> Stat:
        return cls((tuple(items),))

    @classmethod
    def hm(cls, base_items, new_items) -> Stat:
        return cls((tuple(base_items), tuple(new_items)))

    def restrict(self, datasets: set[str]) -> Stat:
        return Stat(tuple(tuple(i for i in part if i[0] in datasets) for part in self.parts))

    def apply(self, get) -> np.ndarray | float:
        """`get(dataset, eval)` → value or replicates (None: absent, skipped); NaN when a part is empty."""
        means = []
        for part in self.parts:
            vals = [v for v in (get(d, e) for d, e in part) if v is not None]
            if not vals:
                return float("nan")
            means.append(np.mean(np.stack([np.asarray(v, dtype=np.float64) for v in vals]), axis=0))
        return means[0] if len(means) == 1 else stats.hm(means[0], means[1])


@dataclass
class Comparison:
    """a − b on one statistic, in points: the paired point difference, its 95 % interval and p-value."""

    delta: float
    lo: float
    hi: float
    p: float
    pairs: int              # aligned runs (seeds) per dataset, the fewest over the datasets compared
    paired: bool            # every dataset compared image by image (predictions of the same images)
    datasets: int
    a: float = float("nan")  # the two statistics on the aligned runs, in %
    b: float = float("nan")


class Uncertainty:
    """Bootstrap statistics over a collected frame (bench.report.collect), memoised per entry and pair."""

    def __init__(self, frame: pd.DataFrame, b: int = stats.B):
        self.b = b
        self.frame = frame
        self.runs: dict[Entry, dict[str, stats.Runs]] = {}
        self.cells: dict[tuple, list[str]] = {}
        self._marg: dict[tuple, dict[str, np.ndarray]] = {}
        self._pair: dict[tuple, tuple] = {}
        self._correct: dict | None = None
        done = completed(frame)
        if done.empty:
            return
        done = done.sort_values("seed")
        n = pd.to_numeric(done["n"], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
        acc = done["acc"].to_numpy(dtype=np.float64) / 100.0
        keys = list(zip(*(done[c] for c in _ENTRY + ["dataset"])))
        grouped: dict[tuple, dict] = {}
        for key, seed, ev, a, k, cid in zip(keys, done["seed"], done["eval"], acc, n, done["cell_id"]):
            g = grouped.setdefault(key, {"seeds": [], "cells": [], "vals": {}})
            if seed not in g["seeds"]:
                g["seeds"].append(int(seed))
                g["cells"].append(cid)
            g["vals"][(ev, int(seed))] = (a, k)
        for key, g in grouped.items():
            evals = list(dict.fromkeys(e for e, _ in g["vals"]))
            nan = (np.nan, 0.0)
            acc_ = {e: np.array([g["vals"].get((e, s), nan)[0] for s in g["seeds"]]) for e in evals}
            n_ = {e: np.array([g["vals"].get((e, s), nan)[1] for s in g["seeds"]]) for e in evals}
            self.runs.setdefault(key[:5], {})[key[5]] = stats.Runs(tuple(g["seeds"]), acc_, n_)
            self.cells[key] = g["cells"]

    # ------------------------------------------------------------------------------------------- one entry

    def point(self, entry: Entry, stat: Stat) -> float:
        """The statistic of seed means (what the tables show), as a fraction."""
        runs = self.runs.get(entry, {})
        return float(stat.apply(lambda d, e: _seed_mean(runs[d].acc[e]) if d in runs and e in runs[d].acc else None))

    def replicates(self, entry: Entry, stat: Stat) -> np.ndarray:
        runs = self.runs.get(entry, {})
        return np.asarray(stat.apply(lambda d, e: self._marginal(entry, d).get(e) if d in runs else None))

    def interval(self, entry: Entry, stat: Stat, level: float = stats.LEVEL) -> tuple[float, float]:
        """The percentile interval of the statistic, in % (NaN, NaN without data)."""
        lo, hi = stats.percentile_interval(self.replicates(entry, stat), level)
        return lo * 100.0, hi * 100.0

    def basis(self, entry: Entry, datasets) -> str:
        """What an interval accounts for: 'seeds+images', 'images' (one seed) or 'seeds' (image counts unknown)."""
        runs = [r for d, r in self.runs.get(entry, {}).items() if d in set(datasets)]
        one_seed = all(len(r.seeds) == 1 for r in runs)
        no_n = any((v <= 0).any() for r in runs for v in r.n.values())
        return "seeds" if no_n else "images" if one_seed else "seeds+images"

    def basis_counts(self) -> dict[str, int]:
        """How many (method, dataset, protocol, K) groups have intervals of each basis."""
        out = {"seeds+images": 0, "images": 0, "seeds": 0}
        for entry, per in self.runs.items():
            for d in per:
                out[self.basis(entry, [d])] += 1
        return out

    def _marginal(self, entry: Entry, dataset: str) -> dict[str, np.ndarray]:
        key = (*entry, dataset)
        if key not in self._marg:
            self._marg[key] = stats.marginal(self.runs[entry][dataset], stats.rng_for("marginal", *key), self.b)
        return self._marg[key]

    # --------------------------------------------------------------------------------------------- pairs

    def _load_correct(self) -> None:
        if self._correct is not None:
            return
        from bench.report.predictions import load_correct

        self._correct = load_correct(self.frame)
        for key, cells in self.cells.items():
            runs = self.runs[key[:5]][key[5]]
            for e in runs.evals:
                got = [self._correct.get((cid, e)) for cid in cells]
                runs.correct[e] = [g[0] if g else None for g in got]
                runs.digest[e] = [g[1] if g else None for g in got]

    def _paired(self, a: Entry, b: Entry, dataset: str) -> tuple:
        key = (a, b, dataset)
        if key not in self._pair:
            self._load_correct()
            ra, rb = self.runs[a][dataset], self.runs[b][dataset]
            reps_a, reps_b, info = stats.paired(ra, rb, stats.rng_for("paired", *key), a[4] == 0, b[4] == 0, self.b)
            if not info["pairs"]:                  # nothing pairs (disjoint seeds): independent replicates
                reps_a, reps_b = self._marginal(a, dataset), self._marginal(b, dataset)
                pa = {e: _seed_mean(v) for e, v in ra.acc.items()}
                pb = {e: _seed_mean(v) for e, v in rb.acc.items()}
            else:
                ia, ib = stats.align(ra, rb, a[4] == 0, b[4] == 0)
                pa = {e: _seed_mean(v[ia]) for e, v in ra.acc.items()}
                pb = {e: _seed_mean(v[ib]) for e, v in rb.acc.items()}
            self._pair[key] = (reps_a, reps_b, pa, pb, info)
        return self._pair[key]

    def compare(self, a: Entry, b: Entry, stat: Stat) -> Comparison:
        """a − b on `stat` over the datasets both have: paired point difference, interval and p-value (points)."""
        common = set(self.runs.get(a, {})) & set(self.runs.get(b, {}))
        stat = stat.restrict(common)
        used = sorted({d for part in stat.parts for d, _ in part})
        if not used:
            return Comparison(float("nan"), float("nan"), float("nan"), float("nan"), 0, False, 0)
        pairs = {d: self._paired(a, b, d) for d in used}

        def get(side: int):
            return lambda d, e: pairs[d][side].get(e)

        va, vb = float(stat.apply(get(2))), float(stat.apply(get(3)))
        reps = np.asarray(stat.apply(get(0))) - np.asarray(stat.apply(get(1)))
        lo, hi = stats.percentile_interval(reps)
        infos = [pairs[d][4] for d in used]
        return Comparison((va - vb) * 100, lo * 100, hi * 100, stats.p_value(reps), min(i["pairs"] for i in infos),
                          all(i["matched"] for i in infos), len(used), va * 100, vb * 100)

    def ties(self, entries: list[Entry], stat: Stat) -> tuple[Entry | None, dict[Entry, tuple[float, bool]]]:
        """(the best entry, every other entry → (Holm-adjusted p, tied with the best)). Tied = not significantly
        different from the best at ALPHA, Holm-corrected over the comparisons of the column."""
        values = {e: self.point(e, stat) for e in entries}
        values = {e: v for e, v in values.items() if v == v}
        if not values:
            return None, {}
        best = max(values, key=lambda e: values[e])
        pvalues = {e: self.compare(best, e, stat).p for e in values if e != best}
        decision = stats.holm({e: p for e, p in pvalues.items() if p == p})
        return best, {e: (p_adj, not rejected) for e, (p_adj, rejected) in decision.items()}

    def ranks(self, entries: list[Entry], stat: Stat) -> dict[Entry, int]:
        """Grouped ranks: the best unranked entry and those tied with it share the next rank (1, 2, 2, 4 ...)."""
        left = [e for e in entries if self.point(e, stat) == self.point(e, stat)]
        out: dict[Entry, int] = {}
        while left:
            best, decision = self.ties(left, stat)
            tied = sorted((e for e, (_, tie) in decision.items() if tie), key=lambda e: -self.point(e, stat))
            rank = len(out) + 1
            for e in [best, *tied]:
                out[e] = rank
            left = [e for e in left if e not in out]
        return out


def _seed_mean(v: np.ndarray) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    return None if v.size == 0 or np.isnan(v).all() else float(np.nanmean(v))


# ------------------------------------------------------------------------------------ intervals for the tables


def _entry(rec: dict, protocol: str) -> Entry:
    return (rec["backbone"], rec["pretrained"], protocol, rec["method"], int(rec["shots"]))


def _set(table: pd.DataFrame, col: str, values: list[tuple[float, float]]) -> None:
    table[f"{col}_lo"] = [v[0] for v in values]
    table[f"{col}_hi"] = [v[1] for v in values]


def add_intervals(tables: dict[str, pd.DataFrame], unc: Uncertainty) -> dict[str, pd.DataFrame]:
    """Add `<value>_lo`/`<value>_hi` (95 % bootstrap interval, %) beside each value of the summary tables
    (`bench.report.aggregate.summaries`), and `ci_basis` (seeds+images, images, seeds). In place; returns them."""
    if "fewshot" in tables:
        t = tables["fewshot"]
        recs = t.to_dict("records")
        _set(t, "mean", [unc.interval(_entry(r, "fewshot"), Stat.mean([(r["dataset"], "all")])) for r in recs])
        t["ci_basis"] = [unc.basis(_entry(r, "fewshot"), [r["dataset"]]) for r in recs]
    if "fewshot_avg" in tables:
        t = tables["fewshot_avg"]
        recs = t.to_dict("records")
        _set(t, "acc", [unc.interval(_entry(r, "fewshot"), Stat.mean([(d, "all") for d in _ds(r)])) for r in recs])
        t["ci_basis"] = [unc.basis(_entry(r, "fewshot"), _ds(r)) for r in recs]
    for name, per in (("base2new", True), ("base2new_avg", False)):
        if name not in tables:
            continue
        t = tables[name]
        recs = t.to_dict("records")
        sets = [[r["dataset"]] if per else _ds(r) for r in recs]
        for col, stat in (("base", lambda ds: Stat.mean([(d, "base") for d in ds])),
                          ("new", lambda ds: Stat.mean([(d, "new") for d in ds])),
                          ("hm", lambda ds: Stat.hm([(d, "base") for d in ds], [(d, "new") for d in ds]))):
            out = "hm" if col == "hm" else (f"{col}_mean" if per else col)
            _set(t, out, [unc.interval(_entry(r, "base2new"), stat(ds)) for r, ds in zip(recs, sets)])
        t["ci_basis"] = [unc.basis(_entry(r, "base2new"), ds) for r, ds in zip(recs, sets)]
    for proto in ("xd", "dg"):
        if proto not in tables:
            continue
        t = tables[proto]
        recs = t.to_dict("records")
        targets = t[t["eval"].ne("source") & t["eval"].ne("target_avg")].groupby(
            ["backbone", "pretrained", "method", "dataset", "shots"])["eval"].agg(list).to_dict()
        stats_ = [Stat.mean([(r["dataset"], e) for e in (targets.get((r["backbone"], r["pretrained"], r["method"],
                                                                        r["dataset"], r["shots"]), [])
                                                           if r["eval"] == "target_avg" else [r["eval"]])])
                  for r in recs]
        _set(t, "mean", [unc.interval(_entry(r, proto), s) for r, s in zip(recs, stats_)])
        t["ci_basis"] = [unc.basis(_entry(r, proto), [r["dataset"]]) for r in recs]
    return tables


def _ds(rec: dict) -> list[str]:
    return [d for d in str(rec.get("datasets") or "").split(",") if d]
