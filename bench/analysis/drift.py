"""Representation drift for `bench analyze`: linear CKA between the frozen and the tuned model, block by block.

Usage:
    >>> from bench.analysis.drift import linear_cka, capture, drift, plot_changes, plot_drift
    >>> linear_cka(x, x)                                   # (n, d) features → 1.0
    >>> feats = capture(method, images)                    # {"image": [(n, width) per block], "text": [...], ...}
    >>> drift(reference_feats, tuned_feats)                # {"image_cka": [...], "text_cka": [...], "image_cos": ...}
    >>> plot_drift({"ClipFit": curves}, "drift.png", title); plot_changes(rows, n_blocks, "change.png", title)

Pooling (one vector per input and block): the image tower's first token (CLS) and the text tower's end-of-text
token (the position CLIP pools), read from forward hooks on every `resblocks[i]` of `clip.visual.transformer` and
`clip.transformer`. The "final" similarity is the mean cosine between the frozen and the tuned model's final
embeddings of the same input: the image embedding the head sees (after an adapter, when the method has one) and
the class text features.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def linear_cka(x: Any, y: Any) -> float:
    """Linear CKA (Kornblith et al. 2019): HSIC(XXᵀ, YYᵀ) / √(HSIC(XXᵀ, XXᵀ)·HSIC(YYᵀ, YYᵀ)) on centred features.

    x: (n, d1), y: (n, d2), the same n inputs in the same order. Equals ‖YᶜᵀXᶜ‖²_F / (‖XᶜᵀXᶜ‖_F ‖YᶜᵀYᶜ‖_F);
    invariant to orthogonal transforms and isotropic scaling of either side. NaN when a side is constant.
    """
    x = np.asarray(_numpy(x), dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(_numpy(y), dtype=np.float64).reshape(len(y), -1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs the same inputs on both sides, got {x.shape[0]} and {y.shape[0]} rows")
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    if x.shape[0] > min(x.shape[1], y.shape[1]):       # feature space smaller: d×d products
        cross = np.linalg.norm(y.T @ x) ** 2
        norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    else:                                              # n×n Gram matrices
        gx, gy = x @ x.T, y @ y.T
        cross = float((gx * gy).sum())
        norm = np.linalg.norm(gx) * np.linalg.norm(gy)
    if norm <= 0 or not math.isfinite(norm):
        return float("nan")
    return float(min(max(cross / norm, 0.0), 1.0))


def _numpy(t: Any) -> Any:
    return t.detach().double().cpu().numpy() if hasattr(t, "detach") else t


def _pool_index(clip, tokens) -> Any:
    """The text position CLIP pools: argmax of the ids (EOT) by default, else per open_clip's text_pool_type."""
    import torch

    kind = getattr(clip, "text_pool_type", "argmax")
    if kind == "first":
        return torch.zeros(len(tokens), dtype=torch.long)
    if kind == "last":
        return torch.full((len(tokens),), tokens.shape[1] - 1, dtype=torch.long)
    if kind == "eos" and getattr(clip, "text_eos_id", None) is not None:
        return (tokens == clip.text_eos_id).int().argmax(dim=-1)
    return tokens.argmax(dim=-1)


def _hook_blocks(blocks, batch_first: bool, store: list, pick) -> list:
    handles = []
    for i, block in enumerate(blocks):
        def hook(_module, _inputs, output, i=i):
            out = output[0] if isinstance(output, tuple) else output
            out = out if batch_first else out.transpose(0, 1)                     # (N, L, width)
            store[i] = pick(out).detach().float().cpu()
        handles.append(block.register_forward_hook(hook))
    return handles


def capture(method, images, batch_size: int = 64) -> dict[str, Any]:
    """Pooled per-block features of both towers, and the final embeddings, for `images` and the class prompts."""
    import torch

    clip = method.clip
    device = method.device
    out: dict[str, Any] = {"image": [], "text": [], "image_final": None, "text_final": None}
    method.eval()
    vis = getattr(clip.visual, "transformer", None)                              # None: a ResNet image tower
    n_vis = len(vis.resblocks) if vis is not None else 0
    per_batch: list[list] = []
    finals = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            store: list = [None] * n_vis
            handles = _hook_blocks(vis.resblocks if vis is not None else [], getattr(vis, "batch_first", True),
                                   store, lambda t: t[:, 0])
            try:
                feats = method.image_features(images[start:start + batch_size].to(device))
            finally:
                for h in handles:
                    h.remove()
            if hasattr(method, "adapt"):                                          # CLIP-Adapter's residual adapter
                feats = method.adapt(feats)
            finals.append(feats.float().cpu())
            per_batch.append(store)
        out["image"] = [torch.cat([b[i] for b in per_batch]) for i in range(n_vis)
                        if all(b[i] is not None for b in per_batch)]
        out["image_final"] = torch.cat(finals)
        txt = clip.transformer
        tokens = method.class_tokens
        index = _pool_index(clip, tokens)
        store = [None] * len(txt.resblocks)
        handles = _hook_blocks(txt.resblocks, getattr(txt, "batch_first", True), store,
                               lambda t: t[torch.arange(len(t), device=t.device), index.to(t.device)])
        try:
            text = method.compute_text_features()
        finally:
            for h in handles:
                h.remove()
        if text is not None and text.numel():
            out["text_final"] = text.float().cpu()
            out["text"] = [s for s in store if s is not None]
    return out


def _mean_cos(a, b) -> float:
    import torch.nn.functional as F

    if a is None or b is None or a.shape != b.shape:
        return float("nan")
    return float(F.cosine_similarity(a.double(), b.double(), dim=-1).mean())


def drift(reference: dict, tuned: dict) -> dict[str, Any]:
    """Per-block linear CKA (image, text) and final-embedding mean cosine between two `capture` results."""
    return {
        "image_cka": [linear_cka(a, b) for a, b in zip(reference["image"], tuned["image"])],
        "text_cka": [linear_cka(a, b) for a, b in zip(reference["text"], tuned["text"])],
        "image_cos": _mean_cos(reference["image_final"], tuned["image_final"]),
        "text_cos": _mean_cos(reference["text_final"], tuned["text_final"]),
    }


def mean_curves(curves: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    """Mean, min and max over cells of equal-length curves (NaN-aware); empty when there are none."""
    curves = [c for c in curves if c]
    if not curves or len({len(c) for c in curves}) != 1:
        return [], [], []
    arr = np.array(curves, dtype=float)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (np.nanmean(arr, 0).tolist(), np.nanmin(arr, 0).tolist(), np.nanmax(arr, 0).tolist())


def plot_drift(groups: dict[str, dict], path, title: str) -> None:
    """CKA(frozen, tuned) per block, image and text tower side by side; one line per entry of `groups`.

    groups: label → {"image_cka": [per-cell curves], "text_cka": [...], "image_cos": [...], "text_cos": [...]}.
    The final embedding's mean cosine is drawn as a hollow marker after the last block.
    """
    from bench.report.plots import _colors, _figure

    fig = _figure(10, 3.8)
    axes = fig.subplots(1, 2)
    colors = _colors(list(groups))
    for ax, tower in zip(axes, ("image", "text")):
        n_blocks = 0
        for label, g in groups.items():
            mean, low, high = mean_curves(g[f"{tower}_cka"])
            if not mean:
                continue
            n_blocks = max(n_blocks, len(mean))
            xs = list(range(len(mean)))
            marker = MARKERS[list(groups).index(label) % len(MARKERS)]
            ax.plot(xs, mean, marker=marker, ms=5, mfc="none", lw=1.4, color=colors[label], label=label)
            if len(g[f"{tower}_cka"]) > 1:
                ax.fill_between(xs, low, high, color=colors[label], alpha=0.15, lw=0)
            cos = [c for c in g[f"{tower}_cos"] if c == c]
            if cos:
                ax.plot([len(mean)], [float(np.mean(cos))], marker="D", ms=6, mfc="none", color=colors[label])
        if n_blocks:
            ticks = list(range(0, n_blocks, max(1, n_blocks // 12))) + [n_blocks]
            ax.set_xticks(ticks, [str(t) if t < n_blocks else "final\n(cos)" for t in ticks])
        else:
            ax.text(0.5, 0.5, "no features", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{tower} tower")
        ax.set_xlabel("block (output of resblocks[i])")
        ax.set_ylabel("linear CKA, frozen vs tuned")
        ax.grid(alpha=0.3)
        lo = min([v for g in groups.values() for c in g[f"{tower}_cka"] + [g[f"{tower}_cos"]] for v in c
                  if v == v] + [1.0])
        lo = min(0.99, lo - 0.1 * (1 - lo))
        ax.set_ylim(lo, 1 + 0.03 * (1 - lo))
    from matplotlib.lines import Line2D

    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[1].get_legend_handles_labels()
    if len(groups) == 1:
        handles, labels = [], []
    handles.append(Line2D([], [], ls="none", marker="D", ms=6, mfc="none", color="black"))
    labels.append("final embedding:\nmean cosine")
    fig.legend(handles, labels, loc="outside right upper")
    fig.suptitle(title)
    fig.savefig(path)


# ---- parameter-change figure (bench.analysis.analyze's rows) ----

def _layer_x(layer: str, n: int) -> int:
    return -1 if layer == "pre" else n if layer == "post" else int(layer)


def _kind_family(kind: str) -> str:
    parts = kind.split(".")
    return f"{parts[0]}.{parts[-1]}" if len(parts) > 2 else kind


def _style(kind: str) -> tuple[str, dict]:
    """(colour key, line style) of a tensor kind: one colour per module, weights solid/o, biases dashed/s."""
    base = kind.split(" (")[0]
    module, _, param = base.rpartition(".")
    if param == "bias":
        return module or base, {"ls": "--", "marker": "s"}
    if param == "weight":
        return module or base, {"ls": "-", "marker": "o"}
    return base, {"ls": ":", "marker": "^"}


def plot_changes(rows: list[dict], n_blocks: dict[str, int], path: Path, title: str) -> None:
    """Relative change per layer, image and text tower (one series per tensor kind) plus 'other' as bars."""
    from bench.report.plots import _colors, _figure

    other = [r for r in rows if r["tower"] == "other" and math.isfinite(r["mean"])]
    panels = ["image", "text"] + (["other"] if other else [])
    fig = _figure(5.2 * len(panels), 4.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    positive = [r["mean"] for r in rows if r["tower"] != "other" and 0 < r["mean"] < math.inf]
    log = bool(positive) and max(positive) / min(positive) > 100
    for ax, tower in zip(axes, panels):
        ax.set_ylabel("relative change ‖Δθ‖/‖θ₀‖")
        if tower == "other":
            ax.bar(range(len(other)), [r["mean"] for r in other], yerr=[r["std"] for r in other], color="tab:gray")
            ax.set_xticks(range(len(other)), [r["kind"] for r in other], rotation=30, ha="right")
            ax.set_title("outside the towers (heads, adapters)")
            continue
        sub = [r for r in rows if r["tower"] == tower and math.isfinite(r["mean"])]
        n = n_blocks.get(tower, 0)
        kinds = sorted({r["kind"] for r in sub})
        family = _kind_family if len(kinds) > 10 else (lambda k: k)
        series: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        for r in sub:
            series[family(r["kind"])][_layer_x(r["layer"], n)].append(r["mean"])
        colors = _colors(sorted({_style(k)[0] for k in series}))
        for kind in sorted(series):
            xs = sorted(series[kind])
            ys = [float(np.mean(series[kind][x])) for x in xs]
            key, style = _style(kind)
            ax.plot(xs, ys, ms=4.5, lw=1.4, color=colors[key], label=kind, **style)
        ticks = [-1] + list(range(0, n, max(1, n // 12))) + [n]
        names = {"image": ("ln_pre/emb", "ln_post/proj"), "text": ("emb/ctx", "ln_final/proj")}[tower]
        ax.set_xticks(ticks, [names[0] if t == -1 else names[1] if t == n else str(t) for t in ticks],
                      rotation=0)
        ax.set_xlim(-1.5, n + 0.5)
        ax.set_title(f"{tower} tower")
        ax.set_xlabel("layer (block index)")
        ax.grid(alpha=0.3)
        if not sub:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "frozen: no tensor trained\n(relative change 0 everywhere)", ha="center",
                    va="center", transform=ax.transAxes, color="0.4")
            continue
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(3, len(series)),
                  frameon=False)
    fig.suptitle(title)
    fig.savefig(path)
