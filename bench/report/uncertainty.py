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
variance is that of a linear combination of the evaluations' seed means (the HM linearised: delta method) under
the crossed seeds × images model of bench.report.stats. Ties: the best entry of a column (highest point value)
is compared with every other entry by the paired test; Holm's procedure over those comparisons at ALPHA; the
entries not rejected are tied with the best (≈). Grouped ranks repeat this: the best of the entries not yet
ranked leads a group of those tied with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.report import stats
from bench.report.collect import KEY, completed

# What identifies a row of a table (a method's runs). `method` is the collected label, which already carries a
# variant and a non-default regime (clipfit@lam=4, coop@published): those columns would only keep two variants of
# one method from being compared side by side.
ENTRY = [c for c in KEY if c not in ("dataset", "seed", "variant", "regime")]
Entry = tuple                                                # values of ENTRY: backbone, pretrained, protocol, method, K
_METHOD, _SHOTS = ENTRY.index("method"), ENTRY.index("shots")


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

    @property
    def datasets(self) -> list[str]:
        return sorted({d for part in self.parts for d, _ in part})

    def weights(self, has, value) -> dict[tuple[str, str], float] | None:
        """Coefficients of the (dataset, eval) seed means in the statistic's linearisation, over the items `has`
        accepts (value: (dataset, eval) → seed mean, for the HM's gradient); None when a part is empty."""
        parts = [[i for i in part if has(*i)] for part in self.parts]
        if any(not p for p in parts):
            return None
        if len(parts) == 1:
            return {i: 1.0 / len(parts[0]) for i in parts[0]}
        means = [float(np.mean([value(*i) for i in p])) for p in parts]
        grad = stats.hm_gradient(means[0], means[1])
        out: dict[tuple[str, str], float] = {}
        for g, p in zip(grad, parts):
            for i in p:
                out[i] = out.get(i, 0.0) + float(g) / len(p)
        return out

    def apply(self, get) -> np.ndarray | float:
        """`get(dataset, eval)` → value (None: absent, skipped); NaN when a part is empty."""
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
    df: float = float("nan")     # degrees of freedom of the seed part (inf: none estimated)
    basis: str = ""              # seeds+images, images (one seed), seeds (no image counts)
    test: str = ""               # the test behind p


class Uncertainty:
    """Intervals and paired tests over a collected frame (bench.report.collect), memoised per entry and pair."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.runs: dict[Entry, dict[str, stats.Runs]] = {}
        self.cells: dict[tuple, list[str]] = {}
        self._moments: dict[tuple, stats.Moments] = {}
        self._estimates: dict[tuple, stats.Estimate] = {}
        self._compared: dict[tuple, Comparison] = {}
        self._points: dict[tuple, float] = {}
        self._correct: dict | None = None
        done = completed(frame)
        if done.empty:
            return
        done = done.sort_values("seed")
        n = pd.to_numeric(done["n"], errors="coerce").fillna(0).to_numpy(dtype=np.float64)
        acc = done["acc"].to_numpy(dtype=np.float64) / 100.0
        keys = list(zip(*(done[c].tolist() for c in ENTRY + ["dataset"])))
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
            self.runs.setdefault(key[:-1], {})[key[-1]] = stats.Runs(tuple(g["seeds"]), acc_, n_)
            self.cells[key] = g["cells"]

    def point(self, entry: Entry, stat: Stat) -> float:
        """The statistic of seed means (what the tables show), as a fraction."""
        key = (entry, stat)
        if key not in self._points:
            runs = self.runs.get(entry, {})
            self._points[key] = float(stat.apply(
                lambda d, e: _seed_mean(runs[d].acc[e]) if d in runs and e in runs[d].acc else None))
        return self._points[key]

    def estimate(self, entry: Entry, stat: Stat) -> stats.Estimate | None:
        """The statistic's Estimate (fractions), or None without data."""
        self._solve([(entry, stat)])
        return self._estimates[(entry, stat)]

    def _solve(self, items: list[tuple[Entry, Stat]]) -> None:
        """Estimates of many (entry, statistic), one vectorised call per shape (stats.linear_many)."""
        todo = {key: self._estimate_blocks(*key) for key in dict.fromkeys(items) if key not in self._estimates}
        self._estimates.update({key: None for key, blocks in todo.items() if blocks is None})
        solve = [key for key, blocks in todo.items() if blocks is not None]
        self._estimates.update(zip(solve, stats.linear_many([(todo[k], self.point(*k)) for k in solve])))

    def _estimate_blocks(self, entry: Entry, stat: Stat) -> list | None:
        """The blocks of the statistic's variance (stats.linear), or None without data."""
        runs = self.runs.get(entry, {})
        has = lambda d, e: d in runs and e in runs[d].acc and _seed_mean(runs[d].acc[e]) is not None  # noqa: E731
        w = stat.weights(has, lambda d, e: _seed_mean(runs[d].acc[e]))
        if w is None:
            return None
        per: dict[str, list] = {}
        for (d, e), c in w.items():
            per.setdefault(d, []).append((e, c))
        units = {}
        for d, items in per.items():
            r = runs[d]
            idx = _complete(r, [e for e, _ in items])
            if not idx:                              # no run has every evaluation the statistic needs
                return None
            units[d] = (tuple(r.seeds[i] for i in idx), [(self._unit(entry, d, e, idx), np.array([c]))
                                                          for e, c in items])
        return _blocks(units)

    def interval(self, entry: Entry, stat: Stat) -> tuple[float, float]:
        """The 95 % interval of the statistic, in % (NaN, NaN without data)."""
        est = self.estimate(entry, stat)        # an accuracy lies in [0, 100]: the interval is cut there
        return (float("nan"), float("nan")) if est is None else (max(est.lo, 0.0) * 100.0, min(est.hi, 1.0) * 100.0)

    def intervals(self, items: list[tuple[Entry, Stat]]) -> list[tuple[float, float]]:
        self._solve(items)
        return [self.interval(e, st) for e, st in items]

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

    def _load_correct(self) -> None:
        if self._correct is not None:
            return
        from bench.report.predictions import load_correct

        self._correct = load_correct(self.frame)
        for key, cells in self.cells.items():
            runs = self.runs[key[:-1]][key[-1]]
            for e in runs.evals:
                got = [self._correct.get((cid, e)) for cid in cells]
                runs.correct[e] = [g[0] if g else None for g in got]
                runs.digest[e] = [g[1] if g else None for g in got]

    def _table(self, entry: Entry, d: str, e: str, idx) -> tuple[np.ndarray | None, str | None]:
        """(S, N) right/wrong of the runs idx and their labels' digest, or (None, None) when not all known."""
        self._load_correct()
        r = self.runs[entry][d]
        c, dg = r.correct.get(e) or [], r.digest.get(e) or []
        got = [(c[i], dg[i]) if i < len(c) else (None, None) for i in idx]
        if not got or any(x is None or g is None for x, g in got) or len({g for _, g in got}) != 1 \
                or len({x.shape for x, _ in got}) != 1:
            return None, None
        return np.stack([x for x, _ in got]), got[0][1]

    def _count(self, entry: Entry, d: str, e: str, idx) -> int:
        n = self.runs[entry][d].n[e][list(idx)]
        return 0 if (n <= 0).any() else int(n.min())

    def _unit(self, entry: Entry, d: str, e: str, idx) -> stats.Moments:
        """One method's moments on evaluation e of dataset d, runs idx."""
        key = (entry, d, e, tuple(int(i) for i in idx))
        if key not in self._moments:
            y, _ = self._table(entry, d, e, idx)
            self._moments[key] = stats.moments(y[None]) if y is not None else stats.moments_from_counts(
                self.runs[entry][d].acc[e][list(idx)][None], self._count(entry, d, e, idx))
        return self._moments[key]

    def _pair_unit(self, a: Entry, b: Entry, d: str, e: str, ia, ib) -> stats.Moments:
        key = (a, b, d, e, tuple(int(i) for i in ia), tuple(int(i) for i in ib))
        self._pair_units([key])
        return self._moments[key]

    def _pair_units(self, keys: list[tuple]) -> None:
        """Pairs' moments on (d, e), runs ia of a aligned with ib of b, per key (a, b, d, e, ia, ib): image by
        image where both have predictions of the same images (one vectorised call per table shape), else each
        side's own (no cross terms)."""
        batch: dict[tuple, list] = {}
        for key in dict.fromkeys(k for k in keys if k not in self._moments):
            a, b, d, e, ia, ib = key
            (ya, ga), (yb, gb) = self._table(a, d, e, ia), self._table(b, d, e, ib)
            if ya is not None and yb is not None and ga == gb:
                batch.setdefault(ya.shape, []).append((key, np.stack([ya, yb])))
            else:
                self._moments[key] = stats.stack_pair(self._unit(a, d, e, ia), self._unit(b, d, e, ib))
        for items in batch.values():
            m = stats.moments(np.stack([y for _, y in items]))
            self._moments.update({key: stats.Moments(m.acc[i], m.img[i], m.res[i], m.n, True, None if m.discordant
                                                     is None else m.discordant[i]) for i, (key, _) in enumerate(items)})

    def compare(self, a: Entry, b: Entry, stat: Stat) -> Comparison:
        """a − b on `stat` over the datasets both have: paired point difference, interval and p-value (points)."""
        return self.compare_pairs([(a, b)], stat)[(a, b)]

    def compare_many(self, a: Entry, bs: list[Entry], stat: Stat) -> dict[Entry, Comparison]:
        return {b: c for (_, b), c in self.compare_pairs([(a, b) for b in bs], stat).items()}

    def compare_pairs(self, pairs: list[tuple[Entry, Entry]], stat: Stat) -> dict[tuple[Entry, Entry], Comparison]:
        """`compare` for many pairs on one statistic (a column's comparisons): their image-paired moments in one
        call per table shape, their variances in one call per shape (stats.linear_many)."""
        todo = [p for p in dict.fromkeys(pairs) if (*p, stat) not in self._compared]
        keys = []
        for a, b in todo:
            for d, evs in _by_dataset(self.runs.get(a, {}), self.runs.get(b, {}), stat)[1].items():
                ia, ib = self.aligned(a, b, d, evs)
                keys += [(a, b, d, e, tuple(map(int, ia)), tuple(map(int, ib))) for e in evs if len(ia)]
        self._pair_units(keys)
        prep = {p: self._prepare(*p, stat) for p in todo}
        solve = [p for p in todo if not isinstance(prep[p], Comparison)]
        prep.update({p: _finish(est, *prep[p][1:]) for p, est in zip(solve, stats.linear_many([prep[p][:2] for p in solve]))})
        self._compared.update({(*p, stat): c for p, c in prep.items()})
        return {p: self._compared[(*p, stat)] for p in pairs}

    def aligned(self, a: Entry, b: Entry, d: str, evals: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Runs of a and b on dataset d compared with each other: common seeds (a zero-shot side, K = 0, pairs
        with every seed), only those with every evaluation in `evals` on both sides."""
        ra, rb = self.runs[a][d], self.runs[b][d]
        ia, ib = stats.align(ra, rb, a[_SHOTS] == 0, b[_SHOTS] == 0)
        ok = [i for i in range(len(ia)) if all(ra.acc[e][ia[i]] == ra.acc[e][ia[i]] and
                                               rb.acc[e][ib[i]] == rb.acc[e][ib[i]] for e in evals)]
        return ia[ok], ib[ok]

    def _prepare(self, a: Entry, b: Entry, stat: Stat) -> Comparison | tuple:
        """Everything `compare` needs but the variance: (blocks, Δ, a, b, pairs, paired, datasets, one-seed
        McNemar), or the Comparison itself when nothing can be compared."""
        nan = float("nan")
        ra, rb = self.runs.get(a, {}), self.runs.get(b, {})
        st, by_d = _by_dataset(ra, rb, stat)
        align = {d: self.aligned(a, b, d, evs) for d, evs in by_d.items()}
        means = {}
        for d, evs in by_d.items():
            ia, ib = align[d]
            for e in evs:
                means[(d, e)] = (_seed_mean(ra[d].acc[e][ia]), _seed_mean(rb[d].acc[e][ib])) if len(ia) else \
                    (_seed_mean(ra[d].acc[e]), _seed_mean(rb[d].acc[e]))
        ok = lambda d, e: (d, e) in means and None not in means[(d, e)]  # noqa: E731
        wa, wb = st.weights(ok, lambda d, e: means[(d, e)][0]), st.weights(ok, lambda d, e: means[(d, e)][1])
        if wa is None or wb is None:
            return Comparison(nan, nan, nan, nan, 0, False, 0)
        va = float(st.apply(lambda d, e: means[(d, e)][0] if ok(d, e) else None))
        vb = float(st.apply(lambda d, e: means[(d, e)][1] if ok(d, e) else None))
        units, paired, pairs = {}, True, []
        for d in sorted({d for d, _ in wa}):
            ia, ib = align[d]
            evs = [e for (dd, e) in wa if dd == d]
            if len(ia):
                seeds = tuple((ra[d].seeds[i], rb[d].seeds[j]) for i, j in zip(ia, ib))
                parts = [(self._pair_unit(a, b, d, e, ia, ib), np.array([wa[(d, e)], -wb[(d, e)]])) for e in evs]
                paired &= all(m.paired for m, _ in parts)
                units[d] = (seeds, parts)
                pairs.append(len(ia))
            else:                                    # no common seed: two independent blocks
                for side, (entry, r, w, sign) in enumerate(((a, ra[d], wa, 1.0), (b, rb[d], wb, -1.0))):
                    idx = _complete(r, evs)
                    if not idx:
                        return Comparison(nan, nan, nan, nan, 0, False, 0)
                    units[(d, side)] = ((side, tuple(r.seeds[i] for i in idx)),
                                        [(self._unit(entry, d, e, idx), np.array([sign * w[(d, e)]])) for e in evs])
                paired, pairs = False, pairs + [0]
        return _blocks(units), va - vb, va, vb, min(pairs), paired, len(by_d), len(units) == 1 and len(wa) == 1 and paired

    def discordant(self, a: Entry, b: Entry, d: str, e: str) -> list[tuple[int, int, int]] | None:
        """Per aligned seed (seed of a, images a got right and b wrong, images b got right and a wrong), or None
        without predictions of the same images."""
        ia, ib = self.aligned(a, b, d, [e])
        (ya, ga), (yb, gb) = self._table(a, d, e, ia), self._table(b, d, e, ib)
        if ya is None or yb is None or ga != gb or not len(ia):
            return None
        return [(self.runs[a][d].seeds[i], int((x & ~y).sum()), int((~x & y).sum())) for i, x, y in zip(ia, ya, yb)]

    def ties(self, entries: list[Entry], stat: Stat) -> tuple[Entry | None, dict[Entry, tuple[float, bool]]]:
        """(the best entry, every other entry → (Holm-adjusted p, tied with the best)). Tied = not significantly
        different from the best at ALPHA, Holm-corrected over the comparisons of the column."""
        values = {e: v for e in entries if (v := self.point(e, stat)) == v}
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
            out.update({e: len(out) + 1 for e in [best, *tied]})
            left = [e for e in left if e not in out]
        return out


def _by_dataset(ra: dict, rb: dict, stat: Stat) -> tuple[Stat, dict[str, list[str]]]:
    """The statistic on the datasets both sides have, and its evaluations both have, per dataset."""
    st = stat.restrict(set(ra) & set(rb))
    by_d: dict[str, list[str]] = {}
    for d, e in sorted({(d, e) for part in st.parts for d, e in part if e in ra[d].acc and e in rb[d].acc}):
        by_d.setdefault(d, []).append(e)
    return st, by_d


def _finish(est: stats.Estimate, delta: float, va: float, vb: float, pairs: int, paired: bool, datasets: int,
            single: bool) -> Comparison:
    """The Comparison of a prepared pair (`Uncertainty._prepare`) given its Estimate."""
    one = est.basis == "images" and single
    return Comparison(delta * 100, max(est.lo, -1.0) * 100, min(est.hi, 1.0) * 100, est.p, pairs, paired, datasets,
                      va * 100, vb * 100, est.df, est.basis, "exact McNemar" if one else
                      "t (seeds × images, fiducial reference)" if est.basis != "images" else "normal (images only)")


def _complete(r: stats.Runs, evals: list[str]) -> list[int]:
    """Indices of the runs that have every evaluation in `evals`."""
    return [i for i in range(len(r.seeds)) if all(r.acc[e][i] == r.acc[e][i] for e in evals)]


def _blocks(units: dict) -> list[list]:
    """One block when every dataset has the same runs (their seed effects may be correlated: the per-seed
    values of the combination carry it), else one independent block per dataset."""
    seeds = {v[0] for v in units.values()}
    return [[part for _, parts in units.values() for part in parts]] if len(seeds) == 1 else \
        [parts for _, parts in units.values()]


def _seed_mean(v: np.ndarray) -> float | None:
    """The mean over seeds, skipping NaN (a seed without this evaluation); None when there is none."""
    vals = [x for x in np.asarray(v, dtype=np.float64).tolist() if x == x]
    return sum(vals) / len(vals) if vals else None
