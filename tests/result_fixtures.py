"""Write schema-valid result.json files (DESIGN.md, schema_version 1, or 2 with a variant) and sweep files into a results root.

Usage:
    >>> from tests.result_fixtures import write_result, write_sweep, plan_cell
    >>> write_result(tmp_path, "coop", "dtd", protocol="base2new", seed=1, metrics={"base": 80.0, "new": 60.0})
    >>> write_sweep(tmp_path, [plan_cell("coop", "dtd", protocol="base2new", seed=s) for s in (1, 2, 3)])
    >>> write_result(tmp_path, "coop", "dtd", seed=1, predictions={"all": correct})   # + predictions.npz

`predictions` maps an evaluation to a bool array (image right?) or to (label, pred) arrays; it writes the cell's
predictions.npz in bench.cell's format (E/label, E/top5, E/top5_logit, E/p_true), records it in
artifacts.predictions, and sets that evaluation's metrics (acc, n) from it unless `metrics` gives them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

METHOD_TITLES = {"zeroshot": "Zero-shot CLIP", "coop": "CoOp", "cocoop": "CoCoOp", "clipfit": "CLIPFit",
                 "clip_adapter": "CLIP-Adapter", "lora": "CLIP-LoRA", "maple": "MaPLe", "kgcoop": "KgCoOp",
                 "prograd": "ProGrad"}
DATASET_TITLES = {"imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
                  "stanford_cars": "StanfordCars", "oxford_flowers": "Flowers102", "food101": "Food101",
                  "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD", "eurosat": "EuroSAT",
                  "ucf101": "UCF101", "imagenet_v2": "ImageNetV2", "imagenet_sketch": "ImageNet-Sketch",
                  "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R"}
PARAMS = {"zeroshot": 0, "coop": 8192, "cocoop": 35360, "clipfit": 46080, "clip_adapter": 262144, "lora": 184320}


def cell_id(method: str, dataset: str, protocol: str = "fewshot", shots: int = 16, seed: int = 1,
            backbone: str = "ViT-B-16", pretrained: str = "openai", variant: Any = "") -> str:
    """A deterministic 16-hex id standing in for the hash of the resolved config (`variant`: anything else in it)."""
    text = json.dumps([method, dataset, protocol, shots, seed, backbone, pretrained, variant], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_cell(method: str, dataset: str, protocol: str = "fewshot", shots: int = 16, seed: int = 1,
              backbone: str = "ViT-B-16", pretrained: str = "openai") -> dict[str, Any]:
    """One entry of a sweep's "cells" list."""
    return {"cell_id": cell_id(method, dataset, protocol, shots, seed, backbone, pretrained), "method": method,
            "dataset": dataset, "protocol": protocol, "shots": shots, "seed": seed, "backbone": backbone,
            "pretrained": pretrained, "activation": natural_activation(backbone, pretrained)}


def natural_activation(backbone: str, pretrained: str) -> str:
    """What bench plans for these weights (OpenAI's: QuickGELU)."""
    from bench.backbone_spec import tag_quick_gelu

    return "quick_gelu" if tag_quick_gelu(backbone, pretrained) else "gelu"


def write_result(root: Path, method: str, dataset: str, *, protocol: str = "fewshot", shots: int = 16,
                 seed: int = 1, metrics: dict[str, float] | None = None, status: str = "completed",
                 backbone: str = "ViT-B-16", pretrained: str = "openai", predictions: dict | None = None,
                 **extra: Any) -> Path:
    """Write `<root>/runs/<protocol>/<dataset>/<method>/<cell_id>/result.json`; returns its path.

    `metrics` maps evaluation name (all/base/new/source/<target>) → top-1 accuracy; `extra` overrides top-level
    or cost fields (device, train_s, eval_s, trainable_params, finished_at, targets, ckpt=True), `id_salt` another
    cell id for the same key (a rerun after a config change), `variant` (a mapping such as {"lam": 4.0}) the
    settings --set changed (schema 2: the file is written as version 2)."""
    variant = extra.pop("variant", None)
    salt = extra.pop("id_salt", "")
    cid = cell_id(method, dataset, protocol, shots, seed, backbone, pretrained, salt if variant is None else [salt, variant])
    folder = Path(root) / "runs" / protocol / dataset / method / cid
    folder.mkdir(parents=True, exist_ok=True)
    if extra.pop("ckpt", False):
        (folder / "ckpt").mkdir(exist_ok=True)
        (folder / "ckpt" / "state.json").write_text("{}")
    arrays = prediction_arrays(predictions) if predictions else {}
    counts = {}                                       # eval → (accuracy %, images) from the predictions
    for e in dict.fromkeys(k.rsplit("/", 1)[0] for k in arrays):
        right = arrays[f"{e}/top5"][:, 0] == arrays[f"{e}/label"]
        counts[e] = (float(right.mean() * 100), len(right))
    metrics = metrics if metrics is not None else ({e: c[0] for e, c in counts.items()} or {"all": 70.0})
    cost = {"train_s": 360.0, "eval_s": 36.0, "images_per_s": 300.0, "peak_mem_mb": 4096.0,
            "trainable_params": PARAMS.get(method, 1000), "total_params": 149620737,
            "device": "cuda:0 (NVIDIA H200)"}
    cost.update({k: extra.pop(k) for k in list(extra) if k in cost})
    doc = {
        "schema_version": 1, "cell_id": cid, "status": status,
        "config": {"method": method, "method_title": METHOD_TITLES.get(method, method), "method_version": 1,
                   "params": {}, "train": {"optimizer": "sgd", "lr": 0.002, "epochs": 10, "batch_size": 32},
                   "backbone": backbone, "pretrained": pretrained,
                   "activation": extra.pop("activation", natural_activation(backbone, pretrained)), "dataset": dataset,
                   "dataset_title": DATASET_TITLES.get(dataset, dataset), "dataset_version": 1, "suite": "coop11",
                   "protocol": protocol, "shots": shots, "seed": seed, "targets": extra.pop("targets", [])},
        "data": {"manifest_sha256": "0" * 64, "n_train": 16 * 10, "n_val": 40, "n_classes": 10,
                 "classes": {"base": 5, "new": 5}},
        "metrics": ({k: {"acc": float(v), "macro_f1": float(v) - 1.0, "n": counts.get(k, (0, 1000))[1]}
                     for k, v in metrics.items()}
                    if status == "completed" else {}),
        "cost": cost,
        "env": {"bench": "0.1.0", "git_sha": "abc1234", "git_dirty": False, "python": "3.11.7", "torch": "2.14.1",
                "open_clip": "3.3.0", "host": "node01", "slurm_job_id": None, "slurm_array_job_id": None,
                "slurm_array_task_id": None},
        "started_at": "2026-11-29T01:00:00Z", "finished_at": extra.pop("finished_at", "2026-11-29T01:14:00Z"),
        "resumed": False,
        "error": None if status == "completed" else {"type": "RuntimeError", "message": "CUDA out of memory",
                                                     "log": str(folder / "log.txt")},
        "artifacts": {"trainable": {"path": "trainable.safetensors", "sha256": "0" * 64}},
    }
    if variant is not None:
        doc["schema_version"] = 2
        doc["config"]["variant"] = variant
    if extra:
        raise TypeError(f"unknown fixture field(s): {', '.join(extra)}")
    if arrays and status == "completed":
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        (folder / "predictions.npz").write_bytes(buf.getvalue())
        doc["artifacts"]["predictions"] = {"path": "predictions.npz",
                                           "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
    path = folder / "result.json"
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def prediction_arrays(predictions: dict[str, Any], n_classes: int = 10) -> dict[str, np.ndarray]:
    """bench.cell's npz arrays from eval → bool right/wrong per image, or eval → (label, pred)."""
    out = {}
    for e, value in predictions.items():
        if isinstance(value, tuple):
            label, pred = (np.asarray(v, dtype=np.int32) for v in value)
        else:
            right = np.asarray(value, dtype=bool)
            label = (np.arange(len(right)) % n_classes).astype(np.int32)
            pred = np.where(right, label, (label + 1) % n_classes).astype(np.int32)
        others = [(pred + i) % n_classes for i in range(1, 5)]
        top5 = np.stack([pred] + [np.where(o == pred, (o + 1) % n_classes, o) for o in others], axis=1)
        out[f"{e}/label"] = label
        out[f"{e}/top5"] = top5.astype(np.int32)
        out[f"{e}/top5_logit"] = np.linspace(20, 10, top5.shape[1], dtype=np.float16)[None].repeat(len(label), 0)
        out[f"{e}/p_true"] = np.where(pred == label, 0.8, 0.05).astype(np.float16)
    return out


def write_sweep(root: Path, cells: list[dict[str, Any]], sweep_id: str = "sweep-0001") -> Path:
    """Write `<root>/sweeps/<sweep_id>.json` listing `cells` (from plan_cell)."""
    folder = Path(root) / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sweep_id}.json"
    path.write_text(json.dumps({"sweep_id": sweep_id, "created_at": "2026-11-29T00:00:00Z", "executor": "local",
                                "cells": cells, "jobs": {}}, indent=1))
    return path
