"""`bench compare A B`: the paired difference between two methods, per dataset and on average, with intervals.

Usage:
    >>> from bench.report.collect import load_results
    >>> from bench.report.pairwise import compare_methods
    >>> compare_methods(load_results("results").frame, "clipfit", "coop")   # one row per (section, dataset, eval)

Each row compares A and B on the same backbone, protocol and K (a zero-shot side, K = 0, is compared with every K
of the other), on the runs they share (common seeds; a single zero-shot run pairs with every seed) and image by
image where both cells have predictions.npz: Δ = A − B in points, its 95 % paired bootstrap interval and the
two-sided p-value (bench.report.uncertainty). Averages over the datasets both have and, for base-to-new, the HM
of the averages are compared through the same resamples.
"""

from __future__ import annotations

import pandas as pd

from bench.errors import BenchError
from bench.report.aggregate import dataset_order
from bench.report.uncertainty import Entry, Stat, Uncertainty

COLUMNS = ["backbone", "pretrained", "protocol", "shots", "dataset", "eval", "a", "b", "delta", "lo", "hi", "p",
           "seeds", "image_paired"]


def _pairs(unc: Uncertainty, a: str, b: str) -> list[tuple[Entry, Entry]]:
    """(entry of A, entry of B) on the same backbone, protocol and K; a side run at K = 0 only (zero-shot) is
    paired with every K of the other."""
    def by_section(m: str) -> dict[tuple, dict[int, Entry]]:
        out: dict[tuple, dict[int, Entry]] = {}
        for e in unc.runs:
            if e[3] == m:
                out.setdefault(e[:3], {})[e[4]] = e
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
    methods = {e[3] for e in unc.runs}
    for m in (a, b):
        if m not in methods:
            raise BenchError(f"method '{m}' has no completed result here; available: {', '.join(sorted(methods))}")
    if a == b:
        raise BenchError("compare two different methods")
    rows = []
    for ea, eb in _pairs(unc, a, b):
        common = [d for d in dataset_order(set(unc.runs[ea]) & set(unc.runs[eb]))]
        evals = list(dict.fromkeys(e for d in common for e in unc.runs[ea][d].evals if e in unc.runs[eb][d].acc))
        shots = max(ea[4], eb[4])
        for d in common:
            for e in [e for e in evals if e in unc.runs[ea][d].acc and e in unc.runs[eb][d].acc]:
                rows.append(_row(unc, ea, eb, shots, d, e, Stat.mean([(d, e)])))
            if ea[2] == "base2new":
                rows.append(_row(unc, ea, eb, shots, d, "hm", Stat.hm([(d, "base")], [(d, "new")])))
        if len(common) > 1 and ea[2] in ("fewshot", "base2new"):
            for e in evals:
                rows.append(_row(unc, ea, eb, shots, "average", e, Stat.mean([(d, e) for d in common])))
            if ea[2] == "base2new":
                stat = Stat.hm([(d, "base") for d in common], [(d, "new") for d in common])
                rows.append(_row(unc, ea, eb, shots, "average", "hm", stat))
        for d in common if ea[2] in ("xd", "dg") else []:
            targets = [e for e in evals if e != "source"]
            if len(targets) > 1:
                rows.append(_row(unc, ea, eb, shots, d, "target_avg", Stat.mean([(d, t) for t in targets])))
    if not rows:
        raise BenchError(f"'{a}' and '{b}' share no backbone, protocol and K with results; nothing to compare")
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(unc: Uncertainty, ea: Entry, eb: Entry, shots: int, dataset: str, ev: str, stat: Stat) -> dict:
    c = unc.compare(ea, eb, stat)
    return {"backbone": ea[0], "pretrained": ea[1], "protocol": ea[2], "shots": shots, "dataset": dataset,
            "eval": ev, "a": c.a, "b": c.b, "delta": c.delta, "lo": c.lo, "hi": c.hi, "p": c.p, "seeds": c.pairs,
            "image_paired": c.paired}
