"""PNG plots for the leaderboard, drawn from the same summary tables (matplotlib, Agg, imported lazily).

Usage:
    >>> from bench.report.aggregate import summaries
    >>> from bench.report.collect import load_results
    >>> from bench.report.plots import write_plots
    >>> res = load_results("results")
    >>> for caption, path in write_plots(summaries(res), res.root / "plots"):
    ...     print(caption, path)

Figures: few-shot accuracy vs K (average over datasets), the same per dataset as small multiples, and Base vs
New per method with HM iso-curves (base-to-new); 95 % intervals as bands and error bars where the tables have them. One set per backbone/pretrained pair. Figures are built with
`matplotlib.figure.Figure` directly, so the global pyplot backend is never touched.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from bench.protocols import PROTOCOLS

ZEROSHOT = "zeroshot"
DPI = 130
MAX_METHODS = 12          # more lines than this are unreadable: plot the best ones (plus zero-shot)


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                                "legend.fontsize": 9, "axes.spines.top": False, "axes.spines.right": False})
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _finish(fig: Any, ax: Any, path: Path, labels: tuple[str, str, str], legend_x: float) -> Path:
    """Axis labels and title, the legend outside on the right, save."""
    xlabel, ylabel, title = labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(legend_x, 0.5), frameon=False)
    fig.savefig(path)
    return path


def _colors(methods: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-")


def _draw_curves(ax: Any, frame: Any, value: str, colors: dict[str, Any], titles: dict[str, str]) -> None:
    """One line per method (acc vs K, log2 axis) with its 95 % interval as a band where the frame has
    `<value>_lo`/`<value>_hi`; zero-shot (K = 0) as a dashed horizontal line (and a faint band)."""
    shots = sorted(k for k in frame["shots"].unique() if k > 0)
    band = {f"{value}_lo", f"{value}_hi"} <= set(frame.columns)
    for method in [m for m in colors if m in set(frame["method"])]:
        sub = frame[frame["method"] == method].sort_values("shots")
        if method == ZEROSHOT or (sub["shots"] == 0).all():
            ax.axhline(sub[value].mean(), ls="--", lw=1.2, color=colors[method], label=titles[method])
            if band and sub[f"{value}_lo"].notna().all():
                ax.axhspan(sub[f"{value}_lo"].mean(), sub[f"{value}_hi"].mean(), color=colors[method], alpha=0.08, lw=0)
            continue
        sub = sub[sub["shots"] > 0]
        ax.plot(sub["shots"], sub[value], marker="o", ms=4, lw=1.6, color=colors[method], label=titles[method])
        if band and len(sub) > 1 and sub[f"{value}_lo"].notna().all():
            ax.fill_between(sub["shots"], sub[f"{value}_lo"], sub[f"{value}_hi"], color=colors[method], alpha=0.15,
                            lw=0)
        elif band and len(sub) == 1 and sub[f"{value}_lo"].notna().all():
            ax.errorbar(sub["shots"], sub[value], yerr=[sub[value] - sub[f"{value}_lo"], sub[f"{value}_hi"] - sub[value]],
                        fmt="none", ecolor=colors[method], elinewidth=1.2, capsize=3)
    if shots:
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.minorticks_off()
    ax.grid(alpha=0.3)


def plot_fewshot_average(avg: Any, path: Path, title: str) -> Path:
    """Average accuracy over datasets vs K, one line per method (`avg` = aggregate.fewshot_average rows)."""
    methods = _order(avg, "acc")
    colors, titles = _colors(methods), _titles(avg)
    fig = _figure(7.0, 4.4)
    ax = fig.add_subplot()
    _draw_curves(ax, avg, "acc", colors, titles)
    return _finish(fig, ax, path, ("shots per class (K)", "top-1 accuracy (%), mean over datasets", title), 1.01)


def plot_fewshot_per_dataset(table: Any, avg: Any, path: Path, title: str) -> Path:
    """Small multiples: one panel per dataset (plus the average first), accuracy vs K per method."""
    methods = _order(avg, "acc")
    colors, titles = _colors(methods), _titles(avg)
    panels = [("Average", avg.rename(columns={"acc": "mean", "acc_lo": "mean_lo", "acc_hi": "mean_hi"}))]
    from bench.report.aggregate import dataset_order

    for dataset in dataset_order(table["dataset"]):
        sub = table[table["dataset"] == dataset]
        panels.append((str(sub["dataset_title"].iloc[0]), sub))
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(3.2 * ncols, 2.6 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (name, sub) in zip(axes.flat, panels):
        _draw_curves(ax, sub, "mean", colors, titles)
        ax.set_title(name)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("K")
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1 (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), frameon=False)
    fig.suptitle(title, fontsize=12)
    fig.savefig(path)
    return path


def plot_base_new(avg: Any, path: Path, title: str, reference: dict[str, tuple[float, float]] | None = None) -> Path:
    """Base vs New accuracy per method (dataset averages) with HM iso-curves; `reference` maps a method to its
    published (base, new), drawn as a hollow marker of the same colour joined to the reproduced point."""
    reference = reference or {}
    fig = _figure(7.4, 5.2)
    ax = fig.add_subplot()
    methods = _order(avg, "hm")
    colors, titles = _colors(methods), _titles(avg)
    rows = avg.set_index("method").loc[methods]
    points = list(zip(rows["base"], rows["new"])) + list(reference.values())
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lo = max(0.0, math.floor(min(xs + ys) / 5) * 5 - 5)
    hi = min(100.0, math.ceil(max(xs + ys) / 5) * 5 + 5)
    _iso_hm(ax, lo, hi)
    for method, rec in rows.iterrows():
        ax.scatter(rec["base"], rec["new"], s=60, color=colors[method], zorder=3,
                   label=f"{titles[method]} (HM {rec['hm']:.2f})")
        if {"base_lo", "base_hi", "new_lo", "new_hi"} <= set(rec.index) and rec[["base_lo", "new_lo"]].notna().all():
            ax.errorbar(rec["base"], rec["new"], xerr=[[rec["base"] - rec["base_lo"]], [rec["base_hi"] - rec["base"]]],
                        yerr=[[rec["new"] - rec["new_lo"]], [rec["new_hi"] - rec["new"]]], fmt="none",
                        ecolor=colors[method], elinewidth=1, capsize=2, alpha=0.7, zorder=2)
        if method in reference:
            b, n = reference[method]
            ax.scatter(b, n, s=60, facecolors="white", edgecolors=colors[method], linewidths=1.6, zorder=3)
            ax.plot([rec["base"], b], [rec["new"], n], ls=":", lw=1, color=colors[method], zorder=2)
    if reference:
        ax.scatter([], [], s=60, facecolors="white", edgecolors="0.3", label="published (reported)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    return _finish(fig, ax, path, ("Base accuracy (%), mean over datasets", "New accuracy (%), mean over datasets",
                                   title), 1.02)


def _iso_hm(ax: Any, lo: float, hi: float) -> None:
    import numpy as np

    step = 5 if hi - lo <= 40 else 10
    for h in range(int(math.ceil(lo / step) * step), int(hi) + 1, step):
        b = np.linspace(max(h / 2 + 0.01, lo), hi, 200)
        n = h * b / (2 * b - h)
        keep = (n >= lo) & (n <= hi)
        if keep.sum() < 2:
            continue
        ax.plot(b[keep], n[keep], color="0.8", lw=0.8, zorder=1)
        ax.annotate(f"HM {h}", (b[keep][-1], n[keep][-1]), fontsize=7, color="0.55", ha="right", va="bottom")


def _order(frame: Any, value: str) -> list[str]:
    """Methods ordered by their best value, descending (so legends read like the tables)."""
    best = frame.groupby("method")[value].max().sort_values(ascending=False)
    return list(best.index)


def _top(frame: Any, value: str) -> tuple[list[str], str]:
    """The MAX_METHODS best methods by `value` (zero-shot always kept) and a title suffix saying so."""
    order = _order(frame, value)
    if len(order) <= MAX_METHODS:
        return order, ""
    keep = order[:MAX_METHODS] + ([ZEROSHOT] if ZEROSHOT in order[MAX_METHODS:] else [])
    return keep, f" — best {MAX_METHODS} of {len(order)} methods"


def _titles(frame: Any) -> dict[str, str]:
    return {m: str(t) for m, t in frame.groupby("method")["method_title"].first().items()}


def write_plots(tables: dict[str, Any], folder: Path, comparison: Any = None) -> list[tuple[str, Path]]:
    """Write every plot the tables allow into `folder`; returns (caption, path) pairs.

    `tables` is `bench.report.aggregate.summaries(...)`; `comparison` (`bench.report.reported.compare(...)`) adds published
    Base/New averages to the base-to-new scatter."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[tuple[str, Path]] = []
    few, b2n = PROTOCOLS["fewshot"], PROTOCOLS["base2new"]
    if few.tables[1] in tables:
        for (bb, pt), avg in tables[few.tables[1]].groupby(["backbone", "pretrained"]):
            keep, note = _top(avg, "acc")
            avg = avg[avg["method"].isin(keep)]
            table = tables[few.tables[0]]
            table = table[(table["backbone"] == bb) & (table["pretrained"] == pt) & table["method"].isin(keep)]
            name = f"{bb}/{pt}{note}"
            p = plot_fewshot_average(avg, folder / f"fewshot_avg-{_slug(bb, pt)}.png", f"Few-shot accuracy ({name})")
            out.append((f"Few-shot accuracy vs K, average over datasets ({name})", p))
            p = plot_fewshot_per_dataset(table, avg, folder / f"fewshot_datasets-{_slug(bb, pt)}.png",
                                         f"Few-shot accuracy per dataset ({name})")
            out.append((f"Few-shot accuracy vs K per dataset ({name})", p))
    if b2n.tables[1] in tables:
        for (bb, pt), avg in tables[b2n.tables[1]].groupby(["backbone", "pretrained"]):
            avg = avg.dropna(subset=["base", "new"])
            if avg.empty:
                continue
            keep, note = _top(avg, "hm")
            avg = avg[avg["method"].isin(keep)]
            ref = _reference_points(comparison, b2n.name, bb, pt, set(avg["method"]))
            p = plot_base_new(avg, folder / f"base2new-{_slug(bb, pt)}.png", f"Base-to-new ({bb}/{pt}{note})", ref)
            out.append((f"Base vs New accuracy with HM iso-curves ({bb}/{pt})", p))
    return out


def _reference_points(comparison: Any, protocol: str, bb: str, pt: str, methods: set[str]) -> dict[str, tuple[float, float]]:
    if comparison is None or len(comparison) == 0:
        return {}
    sub = comparison[(comparison["protocol"] == protocol) & (comparison["dataset"] == "average")
                     & (comparison["backbone"] == bb) & (comparison["pretrained"] == pt)
                     & comparison["method"].isin(methods)]
    wide = sub.pivot_table(index="method", columns="eval", values="reported", aggfunc="first")
    if not {"base", "new"} <= set(wide.columns):
        return {}
    wide = wide.dropna(subset=["base", "new"])
    return {m: (float(r["base"]), float(r["new"])) for m, r in wide.iterrows()}
