"""Where fine-tuning changes CLIP: parameter-change and representation-drift reports over a results tree.

Usage:
    >>> from bench.analysis.analyze import analyze, relative_change
    >>> report = analyze(Path("results"), data_root="data", methods=["clipfit", "lora"], samples=64)
    >>> report.path                                        # <results>/analysis/ANALYSIS.md (+ PNGs beside it)

Each completed cell with a `trainable.safetensors` is rebuilt exactly as before training (same seed, backbone,
classes, template, parameters) to get θ₀, then loaded with its final θ. Parameter change is ‖θ − θ₀‖ / ‖θ₀‖
per trained tensor (LoRA: the merged weight W + s·BA against W; CoOp: the context against its seeded init),
placed by tower (image / text / other) and layer (ln_pre and embeddings before block 0, ln_post/ln_final and
projections after the last). Representation drift is bench.analysis.drift's block-wise linear CKA. Everything is
averaged over seeds (and over datasets and shots in the per-method figures). Redoes the ClipFit study
(Li et al., EMNLP 2024): it found the low-level text c_proj biases and the image ln_pre change most.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError

logger = logging.getLogger(__name__)

TOP_TENSORS = 12
BLOCK = re.compile(r"^(?P<tower>visual\.)?transformer\.resblocks\.(?P<i>\d+)\.(?P<kind>.+)$")
PRE = ("ln_pre", "conv1", "class_embedding", "positional_embedding", "token_embedding", "patch_dropout")


def relative_change(theta: Any, theta0: Any) -> float:
    """‖θ − θ₀‖ / ‖θ₀‖ (Frobenius), in float64; exactly 0 for an untouched tensor, inf when θ₀ = 0 ≠ θ."""
    import torch

    a = torch.as_tensor(theta).detach().double().cpu()
    b = torch.as_tensor(theta0).detach().double().cpu()
    diff = float(torch.linalg.vector_norm(a - b))
    if diff == 0.0:
        return 0.0
    base = float(torch.linalg.vector_norm(b))
    return diff / base if base > 0 else math.inf


def locate(name: str) -> tuple[str, str, str]:
    """(tower, layer, kind) of a trainable tensor name: tower image|text|other, layer pre|<block>|post."""
    short = name[5:] if name.startswith("clip.") else name
    m = BLOCK.match(short)
    if m:
        return ("image" if m["tower"] else "text"), m["i"], m["kind"]
    if short.startswith("visual."):
        rest = short[len("visual."):]
        return "image", "pre" if rest.startswith(PRE) else "post", rest
    if name.startswith("clip.") and short != "logit_scale":
        return "text", "pre" if short.startswith(PRE) else "post", short
    if short == "ctx":
        return "text", "pre", "ctx (prompt context)"
    return "other", "-", short


@dataclass
class CellAnalysis:
    result: dict
    changes: dict[str, dict]                 # tensor name → {tower, layer, kind, rel, abs, numel}
    drift: dict[str, Any] | None = None
    n_blocks: dict[str, int] = field(default_factory=dict)


def load_cells(root: Path, methods=None, datasets=None, protocol=None, shots=None) -> tuple[list[dict], list[str]]:
    """Completed cells matching the filters (newest per method/dataset/shots/seed/backbone), and skip notes."""
    from bench.results import ResultStore

    if not (Path(root) / "runs").is_dir():
        raise BenchError(f"{root} is not a results tree (no runs/ folder); pass the folder `bench run --results` wrote")
    newest: dict[tuple, dict] = {}
    skipped: list[str] = []
    for path, res in ResultStore(Path(root)).iter_results():
        c = res.get("config") or {}
        if res.get("status") != "completed" or (methods and c.get("method") not in methods) \
                or (datasets and c.get("dataset") not in datasets) or (protocol and c.get("protocol") != protocol) \
                or (shots and c.get("shots") not in shots):
            continue
        art = (res.get("artifacts") or {}).get("trainable")
        if not art:
            if c.get("shots"):
                skipped.append(f"{c['method']}/{c['dataset']} K={c['shots']} seed={c['seed']}: no trainable "
                               "tensors saved (a training-free method such as Tip-Adapter, or full_ft without "
                               "BENCH_KEEP_FULL=1)")
            continue
        res = {**res, "_dir": str(path.parent), "_trainable": str(path.parent / art["path"])}
        key = tuple(c.get(k) for k in ("backbone", "pretrained", "protocol", "method", "dataset", "shots", "seed"))
        if key not in newest or (res.get("finished_at") or "") > (newest[key].get("finished_at") or ""):
            newest[key] = res
    cells = sorted(newest.values(), key=lambda r: tuple(str(r["config"][k]) for k in
                                                        ("backbone", "method", "dataset", "protocol", "shots", "seed")))
    return cells, skipped


def rebuild(result: dict, data_root: str):
    """The cell's method exactly as before training (θ₀), its backbone and its test items."""
    import torch

    from bench import cards
    from bench.backbone import load_cell_backbone
    from bench.data.draws import dataset_splits
    from bench.data.fewshot import base_new_split
    from bench.methods import build_method
    from bench.protocols import protocol

    cfg = result["config"]
    splits = dataset_splits(cfg["dataset"], str(data_root))
    card = cards.dataset_card(cfg["dataset"])
    names, test = splits.classnames, splits.test
    if protocol(cfg["protocol"]).class_split:         # the model was built for the base classes
        base = base_new_split(splits.train, [], splits.test, "base")
        names, test = base.classnames, base.test
    bb = load_cell_backbone(cfg)                                # first: building it draws random numbers
    torch.manual_seed(cfg["seed"])
    method = build_method(cfg["method"], bb, names, card.template, cfg["params"], dataset=cfg["dataset"])
    return method, bb, test


def _lora_modules(method) -> dict[str, Any]:
    from bench.methods.lora_layers import LoRALinear

    return {n: m for n, m in method.named_modules() if isinstance(m, LoRALinear)}


def parameter_changes(method, theta0: dict, theta: dict, merged0: dict) -> dict[str, dict]:
    """Per trained tensor: relative/absolute change; LoRA pairs (lora_A, lora_B) become one merged weight."""
    lora = _lora_modules(method)
    folded = {f"{n}.{p}" for n in lora for p in ("lora_A", "lora_B")}
    rows = {}
    for name, t0 in theta0.items():
        if name in folded or name not in theta:
            continue
        rows[name] = (theta[name], t0, "")
    for name, module in lora.items():
        rows[f"{name}.weight"] = (module.merged_weight().detach(), merged0[name], " (LoRA, merged)")
    out = {}
    for name, (t, t0, note) in rows.items():
        tower, layer, kind = locate(name)
        out[name] = {"tower": tower, "layer": layer, "kind": kind + note, "rel": relative_change(t, t0),
                     "abs": float((t.double().cpu() - t0.double().cpu()).norm()), "numel": int(t0.numel())}
    return out


def _images(items, bb, samples: int, seed: int = 0):
    import torch

    from bench.data.images import load_image, test_transform

    items = list(items)
    chosen = random.Random(seed).sample(items, min(samples, len(items))) if samples > 0 else []
    tf = test_transform(bb.image_size, bb.mean, bb.std)
    return torch.stack([tf(load_image(it.path)) for it in chosen]) if chosen else None


def analyze_cell(result: dict, data_root: str, samples: int, device) -> CellAnalysis:
    from safetensors.torch import load_file

    from bench.analysis.drift import capture, drift

    path = Path(result["_trainable"])
    if not path.is_file():
        raise BenchError(f"{path} is missing (referenced by {result['_dir']}/result.json)")
    method, bb, test = rebuild(result, data_root)
    method.to(device)
    theta0 = method.trainable_state()
    merged0 = {n: m.merged_weight().detach().clone() for n, m in _lora_modules(method).items()}
    images = _images(test, bb, samples)
    reference = capture(method, images) if images is not None else None
    method.load_trainable_state({k: v.to(device) for k, v in load_file(str(path)).items()})
    method.train()
    method.eval()                                  # drops cached merged LoRA weights and text features
    changes = parameter_changes(method, theta0, method.trainable_state(), merged0)
    vis = getattr(method.clip.visual, "transformer", None)                # None: a ResNet image tower
    cell = CellAnalysis(result, changes, n_blocks={"image": len(vis.resblocks) if vis is not None else 0,
                                                   "text": len(method.clip.transformer.resblocks)})
    if reference is not None:
        cell.drift = drift(reference, capture(method, images))
    return cell


# ---- aggregation and report ----

def tensor_table(cells: list[CellAnalysis]) -> list[dict]:
    """One row per tensor name: mean/std of the relative change over the cells, sorted by mean (desc)."""
    acc: dict[str, list] = defaultdict(list)
    meta = {}
    for c in cells:
        for name, row in c.changes.items():
            acc[name].append(row["rel"])
            meta[name] = row
    rows = []
    for name, vals in acc.items():
        arr = np.array(vals, dtype=float)
        finite = bool(np.isfinite(arr).all())
        rows.append({**meta[name], "name": name, "mean": float(arr.mean()) if finite else math.inf,
                     "std": float(arr.std()) if finite and len(arr) > 1 else 0.0 if finite else math.nan,
                     "n": len(arr)})
    # largest finite changes first, then tensors trained from a zero init (relative change undefined)
    return sorted(rows, key=lambda r: (not math.isfinite(r["mean"]), -r["mean"] if math.isfinite(r["mean"]) else 0))


def _ranges(layers: list[str]) -> str:
    nums = sorted({int(x) for x in layers if x.isdigit()})
    spans, start = [], None
    for i, v in enumerate(nums):
        start = v if start is None else start
        if i + 1 == len(nums) or nums[i + 1] != v + 1:
            spans.append(f"{start}" if start == v else f"{start}–{v}")
            start = None
    label = ("block " if len(nums) == 1 else "blocks ") + ", ".join(spans) if nums else ""
    return ", ".join([s for s in [label] + sorted({x for x in layers if not x.isdigit() and x != "-"}) if s])


def summarise(title: str, rows: list[dict], drifts: list[dict]) -> str:
    """One or two sentences: which tensors moved most, tower means, where the representation drifts."""
    finite = [r for r in rows if math.isfinite(r["mean"])]
    top = finite[:4]
    groups: dict[tuple, list] = {}
    for r in top:
        groups.setdefault((r["tower"], r["kind"]), []).append(r)
    parts = []
    for (tower, kind), rs in groups.items():
        where = _ranges([r["layer"] for r in rs if r["layer"] not in ("pre", "post")])
        vals = ", ".join(f"{r['mean']:.3g}" for r in rs)
        parts.append(f"the {tower + ' ' if tower != 'other' else ''}{kind}" + (f" of {where}" if where else "") + f" ({vals})")
    from_zero = [r["kind"] for r in rows if not math.isfinite(r["mean"])]
    if parts:
        text = f"**{title}**: " + ("; ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0])
        text += " change most"
    else:
        text = f"**{title}**: only tensors trained from a zero init ({', '.join(from_zero)}) moved"
    towers = {t: [r["mean"] for r in finite if r["tower"] == t] for t in ("image", "text", "other")}
    means = [f"{t} {np.mean(v):.3g} over {len(v)}" for t, v in towers.items() if v]
    if means:
        text += f" (mean relative change per tensor: {'; '.join(means)})"
    text += "."
    for tower in ("image", "text"):
        curves = [d[f"{tower}_cka"] for d in drifts if d and d[f"{tower}_cka"]]
        if curves and len({len(c) for c in curves}) == 1:
            mean = np.nanmean(np.array(curves, dtype=float), 0)
            if np.all(np.isnan(mean)):
                continue
            i = int(np.nanargmin(mean))
            cos = np.nanmean([d[f"{tower}_cos"] for d in drifts if d]) if drifts else float("nan")
            if mean[i] >= 0.9995 and cos >= 1 - 1e-6:
                text += f" {tower.capitalize()} features unchanged (CKA 1, cosine 1)."
            elif mean[i] >= 0.9995:
                text += f" {tower.capitalize()} features: CKA ≥ 0.9995 at every block, final cosine {cos:.4f}."
            else:
                text += f" {tower.capitalize()} features: lowest CKA {mean[i]:.3f} at block {i}, final cosine {cos:.3f}."
    return text


@dataclass
class Report:
    path: Path                               # ANALYSIS.md
    cells: list[CellAnalysis]
    skipped: list[str]
    figures: list[Path]


def default_data_root() -> Path:
    """The mini world's data root, or a one-line error saying to pass --data-root."""
    try:
        from bench.mini.world import find_world
        world = find_world()
    except ImportError:
        world = None
    if world is None:
        raise BenchError("no data root: pass --data-root DIR (the results tree does not record where the images "
                         "are); the default, the mini world, is not built (`bench world` builds it)")
    return Path(world.data_root)


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return "∞ (θ₀ = 0)" if x == math.inf else f"{x:.{digits}g}"


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(p for p in parts if p)).strip("-")


def _cell_row(group: list[CellAnalysis]) -> list:
    c = group[0].result["config"]
    tower = {t: [r["rel"] for g in group for r in g.changes.values() if r["tower"] == t and math.isfinite(r["rel"])]
             for t in ("image", "text", "other")}
    drifts = [g.drift for g in group if g.drift]

    def avg(key, pick):
        vals = [pick(d[key]) for d in drifts if (d[key] if isinstance(d[key], list) else d[key] == d[key])]
        return float(np.nanmean(vals)) if vals else float("nan")

    return [c.get("method_title") or c["method"], c["dataset"], c["protocol"], c["shots"], len(group),
            *[_fmt(float(np.mean(v))) if v else "—" for v in tower.values()],
            _fmt(avg("image_cka", lambda v: v[-1])), _fmt(avg("image_cos", float)),
            _fmt(avg("text_cka", lambda v: v[-1])), _fmt(avg("text_cos", float))]


def analyze(results: Path, data_root: str | Path | None = None, methods=None, datasets=None, protocol=None,
            shots=None, samples: int = 64, out: Path | None = None, device: str | None = None) -> Report:
    """Analyse every matching completed cell; write ANALYSIS.md and PNGs into `out` (<results>/analysis)."""
    import torch
    from tabulate import tabulate

    from bench.analysis.drift import plot_changes, plot_drift

    results = Path(results)
    data_root = Path(data_root) if data_root else default_data_root()
    if not data_root.is_dir():
        raise BenchError(f"data root {data_root} does not exist (pass --data-root DIR: the folder the cells were "
                         "trained from)")
    cells, skipped = load_cells(results, methods, datasets, protocol, shots)
    if not cells:
        raise BenchError(f"no completed cell with saved trainable tensors in {results} matches the filters"
                         + (f" ({len(skipped)} without tensors)" if skipped else ""))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out) if out else results / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    from bench.methods import METHODS

    done: list[CellAnalysis] = []
    for res in cells:
        c = res["config"]
        if getattr(METHODS.get(c["method"]), "sized_by_data", False):
            skipped.append(f"{c['method']}/{c['dataset']} K={c['shots']} seed={c['seed']}: its trainable tensors "
                           "are built from the training images (Tip-Adapter-F's cache keys): no θ₀ to compare with")
            continue
        logger.info("analysing %s %s K=%s seed=%s", c["method"], c["dataset"], c["shots"], c["seed"])
        done.append(analyze_cell(res, str(data_root), samples, dev))
    if not done:
        raise BenchError(f"no cell in {results} matching the filters can be analysed: " + skipped[-1])
    from bench.backbone_spec import display_backbone, weights_label

    by_method: dict[tuple, list[CellAnalysis]] = defaultdict(list)
    by_setting: dict[tuple, list[CellAnalysis]] = defaultdict(list)
    for cell in done:
        c = cell.result["config"]
        bb = (display_backbone(c["backbone"], c.get("activation")), weights_label(c["pretrained"]))
        by_method[(*bb, c["method"])].append(cell)
        by_setting[(*bb, c["method"], c["dataset"], c["protocol"], c["shots"])].append(cell)
    multi_bb = len({k[:2] for k in by_method}) > 1
    figures, summaries, sections, drift_groups = [], [], [], defaultdict(dict)
    for (arch, pretrained, method), group in by_method.items():
        title = group[0].result["config"].get("method_title") or method
        backbone = f"{arch}, {pretrained}" if pretrained != "random" else arch
        label = f"{title} ({backbone})" if multi_bb else title
        rows = tensor_table(group)
        drifts = [g.drift for g in group if g.drift]
        summaries.append("- " + summarise(label, rows, drifts))
        settings = sorted({(g.result["config"]["dataset"], g.result["config"]["shots"]) for g in group})
        shots = sorted({k for _, k in settings})
        datasets = sorted({d for d, _ in settings})
        where = datasets[0] if len(datasets) == 1 else f"{len(datasets)} datasets"   # keeps the title on one line
        scope = f"{len(group)} cell(s): {where}, K={'/'.join(map(str, shots))}"
        fig = out / f"change-{_slug(method, backbone if multi_bb else '')}.png"
        plot_changes(rows, group[0].n_blocks, fig, f"{label}: parameter change by layer ({backbone}, {scope})")
        figures.append(fig)
        table = [[r["name"].removeprefix("clip."), r["tower"], r["layer"], _fmt(r["mean"]), _fmt(r["std"], 2),
                  _fmt(float(np.mean([g.changes[r["name"]]["abs"] for g in group if r["name"] in g.changes]))),
                  r["numel"]] for r in rows[:TOP_TENSORS]]
        text = (f"### {label}\n\n{scope}; {len(rows)} trained tensor(s).\n\n![parameter change]({fig.name})\n\n"
                + tabulate(table, headers=["tensor", "tower", "layer", "rel. change", "std", "‖Δθ‖", "numel"],
                           tablefmt="pipe") + "\n")
        if drifts:
            dfig = out / f"drift-{_slug(method, backbone if multi_bb else '')}.png"
            payload = {k: [d[k] for d in drifts] for k in ("image_cka", "text_cka", "image_cos", "text_cos")}
            plot_drift({label: payload}, dfig, f"{label}: representation drift ({backbone}, {scope})")
            figures.append(dfig)
            drift_groups[backbone][label] = payload
            text += f"\n![representation drift]({dfig.name})\n"
        sections.append(text)
    for backbone, groups in drift_groups.items():
        if len(groups) > 1:
            fig = out / f"drift-all{('-' + _slug(backbone)) if multi_bb else ''}.png"
            plot_drift(groups, fig, f"Representation drift, all methods ({backbone})")
            figures.append(fig)
            sections.insert(0, f"### All methods ({backbone})\n\n![drift, all methods]({fig.name})\n")
    rows = [_cell_row(g) for _, g in sorted(by_setting.items(), key=lambda kv: tuple(map(str, kv[0])))]
    head = ["method", "dataset", "protocol", "K", "seeds", "Δ image", "Δ text", "Δ other", "CKA img (last)",
            "cos img", "CKA text (last)", "cos text"]
    lines = [
        "# Where fine-tuning changes CLIP", "",
        f"Results: `{results}` — {len(done)} cell(s) analysed, data root `{data_root}`, {samples} test images "
        "per dataset (seed 0) and the training class prompts.", "",
        "- **Parameter change**: ‖θ − θ₀‖ / ‖θ₀‖ per trained tensor, θ₀ = the method rebuilt as before training "
        "(CoOp: its seeded context init; LoRA: the merged weight W + s·BA against W). Untouched tensors are 0 and "
        "not listed. Layers: `ln_pre`/embeddings/prompt context before block 0, `ln_post`/`ln_final`/projections "
        "after the last block. Means over seeds (figures: over every cell of the method).",
        "- **Representation drift**: linear CKA between the model before (θ₀) and after training, at the output "
        "of every residual block; pooled on the CLS (first) token for the image tower and the end-of-text token "
        "for the text tower. `cos` = mean cosine between the two models' final embeddings of the same input.", "",
        "## Summary", "", *summaries, "",
        "## Per setting", "", "Δ = mean relative change over the trained tensors of that tower (— = none trained).",
        "", tabulate(rows, headers=head, tablefmt="pipe"), "",
        "## Per method", "", *sections,
    ]
    if skipped:
        lines += ["## Skipped", "", *[f"- {s}" for s in skipped], ""]
    path = out / "ANALYSIS.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Report(path, done, skipped, figures)
