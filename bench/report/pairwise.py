"""`bench compare A B`: the paired difference between two methods, per dataset and on average, with intervals.

Usage:
    >>> from bench.report.collect import load_results
    >>> from bench.report.pairwise import compare_methods
    >>> compare_methods(load_results("results").frame, "clipfit", "coop")   # one row per (section, dataset, eval)

Each row compares A and B on the same backbone, protocol and K (a zero-shot side, K = 0, is compared with every K
of the other), on the runs they share (common seeds; a single zero-shot run pairs with every seed) and image by
image where both cells have predictions.npz: Δ = A − B in points, its 95 % interval and the two-sided p-value of
the paired test (bench.report.uncertainty; exact McNemar with one seed), the test images and, per seed, the
discordant images (A right and B wrong / B right and A wrong). Averages over the datasets both have and, for
base-to-new, the HM of the averages are compared by the same model. `p_holm` is Holm-adjusted over every row of
the table (one family: all the comparisons printed).
"""

from __future__ import annotations

import pandas as pd

from bench.errors import BenchError
from bench.protocols import protocol
from bench.report.aggregate import dataset_order
from bench.report.stats import holm
from bench.report.uncertainty import ENTRY, Entry, Stat, Uncertainty

COLUMNS = ["backbone", "pretrained", "protocol", "shots", "dataset", "eval", "images", "discordant", "a", "b",
           "delta", "lo", "hi", "p", "p_holm", "seeds", "df", "test", "image_paired"]
_SECTION = [c for c in ENTRY if c not in ("method", "shots")]      # what both sides share: backbone, weights, ...
_METHOD, _SHOTS, _PROTOCOL = ENTRY.index("method"), ENTRY.index("shots"), ENTRY.index("protocol")


def _pairs(unc: Uncertainty, a: str, b: str) -> list[tuple[Entry, Entry]]:
    """(entry of A, entry of B) on the same backbone, protocol and K; a side run at K = 0 only (zero-shot) is
    paired with every K of the other."""
    def by_section(m: str) -> dict[tuple, dict[int, Entry]]:
        out: dict[tuple, dict[int, Entry]] = {}
        for e in unc.runs:
            if e[_METHOD] == m:
                out.setdefault(tuple(v for c, v in zip(ENTRY, e) if c in _SECTION), {})[e[_SHOTS]] = e
        return out

    mine, theirs = by_section(a), by_section(b)
    out = []
    for sec in sorted(set(mine) & set(theirs)):
        ka, kb = mine[sec], theirs[sec]
        if set(ka) == {0} and set(kb) != {0}:
            out += [(ka[0], kb[k]) for k in sorted(kb)]
        elif set(kb) == {0} and set(ka) != {0}:
            out += [(ka[k], kb[0]) for k in sorted(ka)]
        else:
            out += [(ka[k], kb[k]) for k in sorted(set(ka) & set(kb))]
    return out


def compare_methods(frame: pd.DataFrame, a: str, b: str, unc: Uncertainty | None = None) -> pd.DataFrame:
    """A − B per (backbone, pretrained, protocol, K) × dataset × evaluation, plus averages (and HM)."""
    unc = unc or Uncertainty(frame)
    methods = {e[_METHOD] for e in unc.runs}
    for m in (a, b):
        if m not in methods:
            raise BenchError(f"method '{m}' has no completed result here; available: {', '.join(sorted(methods))}")
    if a == b:
        raise BenchError("compare two different methods")
    rows = []
    for ea, eb in _pairs(unc, a, b):
        common = [d for d in dataset_order(set(unc.runs[ea]) & set(unc.runs[eb]))]
        evals = list(dict.fromkeys(e for d in common for e in unc.runs[ea][d].evals if e in unc.runs[eb][d].acc))
        shots = max(ea[_SHOTS], eb[_SHOTS])
        proto = protocol(ea[_PROTOCOL])
        hm = Stat.hm if proto.class_split else None       # the harmonic mean of its two evaluations (base, new)
        for d in common:
            for e in [e for e in evals if e in unc.runs[ea][d].acc and e in unc.runs[eb][d].acc]:
                rows.append(_row(unc, ea, eb, shots, d, e, Stat.mean([(d, e)])))
            if hm:
                rows.append(_row(unc, ea, eb, shots, d, "hm", hm(*([(d, e)] for e in proto.own_evals))))
        if len(common) > 1 and proto.averaged:
            for e in evals:
                rows.append(_row(unc, ea, eb, shots, "average", e, Stat.mean([(d, e) for d in common])))
            if hm:
                stat = hm(*([(d, e) for d in common] for e in proto.own_evals))
                rows.append(_row(unc, ea, eb, shots, "average", "hm", stat))
        for d in common if proto.transfer else []:
            targets = [e for e in evals if e not in proto.own_evals]
            if len(targets) > 1:
                rows.append(_row(unc, ea, eb, shots, d, "target_avg", Stat.mean([(d, t) for t in targets])))
    if not rows:
        raise BenchError(f"'{a}' and '{b}' share no backbone, protocol and K with results; nothing to compare")
    table = pd.DataFrame(rows, columns=COLUMNS)
    adjusted = holm({i: p for i, p in enumerate(table["p"])})
    table["p_holm"] = [adjusted[i][0] for i in range(len(table))]
    return table


def _row(unc: Uncertainty, ea: Entry, eb: Entry, shots: int, dataset: str, ev: str, stat: Stat) -> dict:
    c = unc.compare(ea, eb, stat)
    images, disc = "", ""
    if len(stat.parts) == 1 and len(stat.parts[0]) == 1:      # one evaluation of one dataset (not an average)
        d = stat.datasets[0]
        n = unc.runs[ea][d].n.get(ev)
        images = int(n[n > 0].min()) if n is not None and (n > 0).any() else ""
        got = unc.discordant(ea, eb, d, ev)
        disc = " ".join(f"{n10}/{n01}" for _, n10, n01 in got) if got else ""
    names = dict(zip(ENTRY, ea))
    return {"backbone": names.get("backbone"), "pretrained": names.get("pretrained"), "protocol": names.get("protocol"),
            "shots": shots, "dataset": dataset, "eval": ev, "images": images, "discordant": disc, "a": c.a, "b": c.b,
            "delta": c.delta, "lo": c.lo, "hi": c.hi, "p": c.p, "p_holm": float("nan"), "seeds": c.pairs,
            "df": c.df, "test": c.test, "image_paired": c.paired}
