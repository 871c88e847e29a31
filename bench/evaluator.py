"""The one evaluator: top-1 accuracy and macro-F1 (Dassl's definitions), batched, no grad.

Usage:
    >>> metrics = evaluate(method, test_items, device, batch_size=100, features=cache)
    >>> metrics
    {'acc': 71.3, 'macro_f1': 70.2, 'n': 3669}

accuracy = 100·correct/total; macro_f1 = 100·F1 averaged over the classes present in the ground truth.
Methods with a frozen image tower classify cached `encode_image` features: a test split is encoded once per
(backbone, dataset, split) and shared by every such method, shot count and seed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from bench.checkpoint import save_tensors
from bench.data.images import ImageSet, test_transform
from bench.data.splits import Item
from bench.trainer import autocast

logger = logging.getLogger(__name__)


def metrics_from_predictions(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """(N,) labels and predictions → {"acc", "macro_f1", "n"} in percent."""
    acc = 100.0 * float((y_true == y_pred).mean()) if len(y_true) else float("nan")
    f1 = 100.0 * f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true)) if len(y_true) else float("nan")
    return {"acc": acc, "macro_f1": float(f1), "n": int(len(y_true))}


def _loader(items: list[Item], backbone, batch_size: int, num_workers: int):
    tf = test_transform(backbone.image_size, backbone.mean, backbone.std)
    return torch.utils.data.DataLoader(ImageSet(items, tf), batch_size=batch_size, shuffle=False,
                                       num_workers=num_workers)


class FeatureCache:
    """Frozen-tower image features per (backbone, image list); in memory, and on disk when `folder` is set."""

    def __init__(self, folder: Path | None = None, max_items: int = 16):
        self.folder = folder
        self.memory: dict[str, torch.Tensor] = {}
        self.max_items = max_items

    @staticmethod
    def key(backbone_id: str, items: list[Item], image_size: int, precision: str = "fp32") -> str:
        """Backbone (weights and activation), input size, autocast precision, and every image's path, size and
        mtime: features of images whose bytes changed are never served."""
        h = hashlib.sha256(f"{backbone_id}|{image_size}|{precision}".encode())
        for it in items:
            try:
                st = os.stat(it.path)
                h.update(f"{it.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            except OSError:
                h.update(f"{it.path}\0missing\0".encode())
        return h.hexdigest()[:24]

    def get(self, key: str) -> torch.Tensor | None:
        if key in self.memory:
            return self.memory[key]
        path = self.folder / f"{key}.safetensors" if self.folder else None
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            self.memory[key] = load_file(str(path))["features"]
            return self.memory[key]
        return None

    def put(self, key: str, feats: torch.Tensor) -> None:
        if len(self.memory) >= self.max_items:
            self.memory.pop(next(iter(self.memory)))
        self.memory[key] = feats
        if self.folder is not None:
            save_tensors(self.folder / f"{key}.safetensors", {"features": feats})


@torch.no_grad()
def image_features(method, items: list[Item], device: torch.device, batch_size: int, num_workers: int = 0,
                   cache: FeatureCache | None = None, backbone_id: str = "", amp: torch.dtype | None = None
                   ) -> torch.Tensor:
    """(N, D) fp32 `clip.encode_image` features of the pristine (frozen) image tower, cached when possible."""
    bb = method.backbone
    precision = str(amp).replace("torch.", "") if amp else "fp32"
    key = FeatureCache.key(backbone_id or bb.id, items, bb.image_size, precision) if cache is not None else None
    if key is not None and (hit := cache.get(key)) is not None:
        return hit
    with autocast(device, amp):
        feats = [method.clip.encode_image(x.to(device)).float().cpu()
                 for x, _ in _loader(items, bb, batch_size, num_workers)]
    out = torch.cat(feats) if feats else torch.zeros(0)
    if key is not None:
        cache.put(key, out)
    return out


@torch.no_grad()
def evaluate(method, items: list[Item], device: torch.device, batch_size: int = 100, num_workers: int = 0,
             cache: FeatureCache | None = None, backbone_id: str = "", amp: torch.dtype | None = None
             ) -> dict[str, float]:
    """Under the run's autocast (`amp`, as training; the official code evaluates in fp16), with fp32 logits."""
    method.eval()
    method.to(device)
    labels = np.array([it.label for it in items])
    if method.frozen_image_tower:
        feats = image_features(method, items, device, batch_size, num_workers, cache, backbone_id, amp)
        with autocast(device, amp):
            preds = [method.logits_from_features(feats[i:i + batch_size].to(device)).float().argmax(-1).cpu()
                     for i in range(0, len(feats), batch_size)]
    else:
        with autocast(device, amp):
            preds = [method(x.to(device)).float().argmax(-1).cpu()
                     for x, _ in _loader(items, method.backbone, batch_size, num_workers)]
    pred = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=int)
    return metrics_from_predictions(labels, pred)
