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
        if len(self.parts) == 1 and len(self.parts[0]) == 1:               # one dataset and evaluation
            v = get(*self.parts[0][0])
            return float("nan") if v is None else v
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
        self._intervals: dict[tuple, tuple[float, float]] = {}
        self._compared: dict[tuple, Comparison] = {}
        self._points: dict[tuple, float] = {}
        self._correct: dict | None = None
        done = completed(frame)
        if done.empty:
            return
        done = done.sort_values("seed")
        n = pd.to_numeric(done["n"], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
        acc = done["acc"].to_numpy(dtype=np.float64) / 100.0
        keys = list(zip(*(done[c].tolist() for c in _ENTRY + ["dataset"])))
        grouped: dict[tuple, dict] = {}
        for key, seed, ev, a, k, cid in zip(keys, done["seed"].tolist(), done["eval"].tolist(), acc.tolist(),
                                            n.tolist(), done["cell_id"].tolist()):
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
        key = (entry, stat)
        if key not in self._points:
            runs = self.runs.get(entry, {})
            self._points[key] = float(stat.apply(
                lambda d, e: _seed_mean(runs[d].acc[e]) if d in runs and e in runs[d].acc else None))
        return self._points[key]

    def replicates(self, entry: Entry, stat: Stat) -> np.ndarray:
        runs = self.runs.get(entry, {})
        return np.asarray(stat.apply(lambda d, e: self._marginal(entry, d).get(e) if d in runs else None))

    def interval(self, entry: Entry, stat: Stat, level: float = stats.LEVEL) -> tuple[float, float]:
        """The percentile interval of the statistic, in % (NaN, NaN without data)."""
        return self.intervals([(entry, stat)], level)[0]

    def intervals(self, items: list[tuple[Entry, Stat]], level: float = stats.LEVEL) -> list[tuple[float, float]]:
        """`interval` for many (entry, statistic) pairs at once (one vectorised percentile computation)."""
        todo = list(dict.fromkeys(k for k in items if (*k, level) not in self._intervals))
        if todo:
            reps = [np.asarray(self.replicates(e, st), dtype=np.float64) for e, st in todo]
            width = max((r.size for r in reps if r.ndim == 1), default=1)
            block = np.stack([r if r.ndim == 1 and r.size == width else np.full(width, np.nan) for r in reps])
            lo, hi = stats.percentile_intervals(block, level)
            for key, a, b in zip(todo, lo.tolist(), hi.tolist()):
                self._intervals[(*key, level)] = (a * 100.0, b * 100.0)
        return [self._intervals[(*k, level)] for k in items]

    def basis(self, entry: Entry, datasets) -> str:
        """What an interval accounts for: 'seeds+images', 'images' (one seed) or 'seeds' (image counts unknown)."""
        runs = [r for d, r in self.runs.get(entry, {}).items() if d in set(datasets)]
        one_seed = all(len(r.seeds) == 1 for r in runs)
        no_n = any(((r.n[e] <= 0) & ~np.isnan(r.acc[e])).any() for r in runs for e in r.evals)
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
            self._load_correct()
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

    def _independent(self, a: Entry, b: Entry, d: str) -> tuple:
        """Nothing pairs (disjoint seeds): each side's own replicates, drawn independently."""
        ra, rb = self.runs[a][d], self.runs[b][d]
        return (self._marginal(a, d), self._marginal(b, d), {e: _seed_mean(v) for e, v in ra.acc.items()},
                {e: _seed_mean(v) for e, v in rb.acc.items()}, {"pairs": 0, "matched": False})

    def _prepare_pairs(self, a: Entry, bs: list[Entry], d: str) -> None:
        """Draw the joint replicates of (a, b) on dataset d for every b not drawn yet, one batch per alignment."""
        todo = [b for b in dict.fromkeys(bs) if (a, b, d) not in self._pair]
        if not todo:
            return
        self._load_correct()
        ra = self.runs[a][d]
        groups: dict[tuple, list[Entry]] = {}
        for b in todo:
            rb = self.runs[b][d]
            ia, ib = stats.align(ra, rb, a[4] == 0, b[4] == 0)
            evals = tuple(e for e in ra.evals if e in rb.acc)
            if not len(ia) or not evals:
                self._pair[(a, b, d)] = self._independent(a, b, d)
            else:
                groups.setdefault((tuple(ia.tolist()), tuple(ib.tolist()), evals), []).append(b)
        for (ia_, ib_, evals), members in groups.items():
            ia, ib = np.array(ia_, dtype=int), np.array(ib_, dtype=int)
            rng = stats.rng_for("paired", a, d, ia_, ib_, tuple(members))
            reps_a, reps_b, matched = stats.paired_many(ra, [self.runs[b][d] for b in members], rng, ia, ib,
                                                        list(evals), self.b)
            point_a = {e: _seed_mean(ra.acc[e][ia]) for e in evals}
            for k, b in enumerate(members):
                rb = self.runs[b][d]
                self._pair[(a, b, d)] = (dict(zip(evals, reps_a[k])), dict(zip(evals, reps_b[k])), point_a,
                                         {e: _seed_mean(rb.acc[e][ib]) for e in evals},
                                         {"pairs": len(ia), "matched": matched[k]})

    def compare(self, a: Entry, b: Entry, stat: Stat) -> Comparison:
        """a − b on `stat` over the datasets both have: paired point difference, interval and p-value (points)."""
        return self.compare_many(a, [b], stat)[b]

    def compare_many(self, a: Entry, bs: list[Entry], stat: Stat) -> dict[Entry, Comparison]:
        """`compare(a, b, stat)` for every b, vectorised over the b that share datasets with a alike."""
        todo = [b for b in dict.fromkeys(bs) if (a, b, stat) not in self._compared]
        by_common: dict[frozenset, list[Entry]] = {}
        for b in todo:
            by_common.setdefault(frozenset(self.runs.get(a, {})) & frozenset(self.runs.get(b, {})), []).append(b)
        for common, members in by_common.items():
            st = stat.restrict(set(common))
            used = sorted({d for part in st.parts for d, _ in part})
            if not used:
                nan = float("nan")
                self._compared.update({(a, b, stat): Comparison(nan, nan, nan, nan, 0, False, 0) for b in members})
                continue
            for d in used:
                self._prepare_pairs(a, members, d)
            wanted = [(d, e) for part in st.parts for d, e in part]
            complete = [b for b in members if all(e in self._pair[(a, b, d)][0] for d, e in wanted)]
            if complete:
                self._compare_group(a, complete, st, stat, used)
            for b in members:
                if b not in complete:
                    self._compare_group(a, [b], st, stat, used)
        return {b: self._compared[(a, b, stat)] for b in bs}

    def _compare_group(self, a: Entry, members: list[Entry], st: Stat, stat: Stat, used: list[str]) -> None:
        """Comparisons of a with `members` on `st` (restricted to `used` datasets), vectorised over members."""
        pairs = {(b, d): self._pair[(a, b, d)] for b in members for d in used}

        def get(side: int):
            def one(d: str, e: str):
                vals = [pairs[(b, d)][side].get(e) for b in members]
                return None if any(v is None for v in vals) else np.stack([np.asarray(v) for v in vals])
            return one

        k = len(members)
        va = np.broadcast_to(np.asarray(st.apply(get(2)), dtype=np.float64), (k,))
        vb = np.broadcast_to(np.asarray(st.apply(get(3)), dtype=np.float64), (k,))
        reps = np.asarray(st.apply(get(0)), dtype=np.float64) - np.asarray(st.apply(get(1)), dtype=np.float64)
        reps = reps if reps.ndim == 2 else np.full((k, 1), np.nan)
        lo, hi = stats.percentile_intervals(reps)
        p = stats.p_values(va - vb, reps)
        for i, b in enumerate(members):
            infos = [pairs[(b, d)][4] for d in used]
            self._compared[(a, b, stat)] = Comparison(
                float(va[i] - vb[i]) * 100, float(lo[i]) * 100, float(hi[i]) * 100, float(p[i]),
                min(x["pairs"] for x in infos), all(x["matched"] for x in infos), len(used),
                float(va[i]) * 100, float(vb[i]) * 100)

    def ties(self, entries: list[Entry], stat: Stat) -> tuple[Entry | None, dict[Entry, tuple[float, bool]]]:
        """(the best entry, every other entry → (Holm-adjusted p, tied with the best)). Tied = not significantly
        different from the best at ALPHA, Holm-corrected over the comparisons of the column."""
        values = {e: self.point(e, stat) for e in entries}
        values = {e: v for e, v in values.items() if v == v}
        if not values:
            return None, {}
        best = max(values, key=lambda e: values[e])
        pvalues = {e: c.p for e, c in self.compare_many(best, [e for e in values if e != best], stat).items()}
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
    """The mean over seeds, skipping NaN (a seed without this evaluation); None when there is none."""
    vals = [x for x in np.asarray(v, dtype=np.float64).tolist() if x == x]
    return sum(vals) / len(vals) if vals else None


# ------------------------------------------------------------------------------------ intervals for the tables


def _entry(rec: dict, protocol: str) -> Entry:
    return (rec["backbone"], rec["pretrained"], protocol, rec["method"], int(rec["shots"]))


def _set(table: pd.DataFrame, col: str, values: list[tuple[float, float]]) -> None:
    table[f"{col}_lo"] = [v[0] for v in values]
    table[f"{col}_hi"] = [v[1] for v in values]


def add_intervals(tables: dict[str, pd.DataFrame], unc: Uncertainty) -> dict[str, pd.DataFrame]:
    """Add `<value>_lo`/`<value>_hi` (95 % bootstrap interval, %) beside each value of the summary tables
    (`bench.report.aggregate.summaries`), and `ci_basis` (seeds+images, images, seeds). In place; returns them."""
    def fill(t: pd.DataFrame, protocol: str, cols: dict[str, list[Stat]], datasets: list[list[str]]) -> None:
        entries = [_entry(r, protocol) for r in t[_ENTRY[:2] + ["method", "shots"]].to_dict("records")]
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
