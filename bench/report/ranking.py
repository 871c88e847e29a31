"""Across datasets: each method's mean rank with its interval, and its significant wins, ties and losses.

Usage:
    >>> from bench.report.ranking import across_datasets
    >>> blocks = across_datasets(unc, {"clipfit": entry_a, "coop": entry_b}, {"dtd": stat_dtd, ...}, titles)

Per dataset the methods are ranked by their value (1 = best, equal values share the mean rank). A method's mean
rank is averaged over the datasets it has, with a 95 % t interval over those datasets (the datasets taken as a
sample of tasks; it says how much the rank moves from one dataset to the next, not how sure one dataset's order
is). The latter is the wins / ties / losses: every pair of methods on every dataset by the paired test of
bench.report.uncertainty, Holm-corrected over all the comparisons of the table; a tie is a difference the test
does not resolve. Win rate = (wins + ties/2) / comparisons.
"""

from __future__ import annotations

import math

import numpy as np

from bench.report import stats
from bench.report.mdtable import DASH, Row, Table
from bench.report.uncertainty import Entry, Stat, Uncertainty

HEADS = ["Method", "Mean rank [95% over datasets]", "Datasets", "Wins / ties / losses", "Win rate"]
MAX_PAIRWISE = 8      # pairwise tests among this many methods (best mean ranks first): M²·D tests grow fast


def across_datasets(unc: Uncertainty, entries: dict[str, Entry], per_dataset: dict[str, Stat],
                    titles: dict[str, str], heading: str = "#### Across datasets") -> list:
    """The ranking table as blocks (heading, note, Table); nothing with fewer than two methods or datasets."""
    values = {m: {d: unc.point(e, st) for d, st in per_dataset.items()} for m, e in entries.items()}
    values = {m: {d: v for d, v in vals.items() if v == v} for m, vals in values.items()}
    datasets = [d for d in per_dataset if sum(d in v for v in values.values()) > 1]
    methods = [m for m in entries if any(d in values[m] for d in datasets)]
    if len(methods) < 2 or len(datasets) < 2:
        return []
    ranks: dict[str, list[float]] = {m: [] for m in methods}
    for d in datasets:
        here = [m for m in methods if d in values[m]]
        for m in here:
            better = sum(values[o][d] > values[m][d] for o in here)
            same = sum(values[o][d] == values[m][d] for o in here)
            ranks[m].append(better + (same + 1) / 2)
    order = sorted(methods, key=lambda m: float(np.mean(ranks[m])))
    tested = set(order[:MAX_PAIRWISE])
    pvalues, signs = {}, {}
    for d in datasets:
        here = [m for m in methods if d in values[m] and m in tested]
        pairs = [(a, b) for i, a in enumerate(here) for b in here[i + 1:]]
        got = unc.compare_pairs([(entries[a], entries[b]) for a, b in pairs], per_dataset[d])
        for a, b in pairs:
            c = got[(entries[a], entries[b])]
            pvalues[(d, a, b)], signs[(d, a, b)] = c.p, np.sign(c.delta)
    decision = stats.holm(pvalues)
    record = {m: [0, 0, 0] for m in tested}
    for (d, a, b), (_, rejected) in decision.items():
        if rejected and signs[(d, a, b)] != 0:
            win, lose = (a, b) if signs[(d, a, b)] > 0 else (b, a)
            record[win][0] += 1
            record[lose][2] += 1
        else:
            record[a][1] += 1
            record[b][1] += 1
    rows = []
    for m in order:
        r = np.asarray(ranks[m])
        mean = float(r.mean())
        if len(r) > 1:
            from scipy.special import stdtrit

            half = float(stdtrit(len(r) - 1, 0.975)) * float(r.std(ddof=1)) / math.sqrt(len(r))
            text = f"{mean:.2f} [{max(1.0, mean - half):.1f}, {min(len(methods), mean + half):.1f}]"
        else:
            text = f"{mean:.2f}"
        w, t, lo = record.get(m, (0, 0, 0))
        n = w + t + lo
        rows.append(Row([titles.get(m, m), text, str(len(r)), f"{w} / {t} / {lo}" if m in tested else DASH,
                         f"{(w + t / 2) / n:.0%}" if n else DASH], {1: -mean, 2: len(r), 4: (w + t / 2) / n if n else math.nan}))
    among = f" among the {MAX_PAIRWISE} best by mean rank" if len(methods) > MAX_PAIRWISE else ""
    return [f"{heading}\n", f"_Mean rank over {len(datasets)} datasets (1 = best); wins / ties / losses: paired tests "
            f"per dataset against every other method{among}, Holm-corrected over the {len(pvalues)} comparisons._\n",
            Table(list(HEADS), rows)]
