"""The one evaluator: top-1 accuracy and macro-F1 (Dassl's definitions) plus per-image predictions, no grad.

Usage:
    >>> ev = evaluate(method, test_items, device, EvalOptions(amp=torch.bfloat16), cache=features)
    >>> ev.metrics
    {'acc': 71.3, 'macro_f1': 70.2, 'n': 3669}
    >>> ev.predictions["top5"].shape
    (3669, 5)

accuracy = 100·correct/total; macro_f1 = 100·F1 averaged over the classes present in the ground truth.
Evaluation runs under the run's autocast with fp32 logits. The fast path reads test pixels from the decoded,
memory-mapped split cache (bench.data.decoded) in large batches; the slow path decodes JPEGs through a DataLoader.
Both feed the model the same pixels. Methods with a frozen image tower classify cached `encode_image` features:
a test split is encoded once per (backbone, activation, precision, image list) and shared by every such method,
shot count and seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from bench.checkpoint import save_tensors
from bench.data.decoded import decoded_split, items_key, iter_decoded
from bench.data.images import ImageSet, test_transform
from bench.data.splits import Item
from bench.precision import autocast

logger = logging.getLogger(__name__)
TOPK = 5


@dataclass(frozen=True)
class EvalOptions:
    amp: torch.dtype | None = None      # the run's autocast dtype (None: fp32)
    fast: bool = True                   # decoded test cache + large batches
    batch_size: int = 100               # slow path (Dassl's test batch)
    fast_batch_size: int = 500
    num_workers: int = 0

    @property
    def batch(self) -> int:
        return self.fast_batch_size if self.fast else self.batch_size


@dataclass
class Evaluation:
    metrics: dict[str, float]
    predictions: dict[str, np.ndarray]  # label, top5 (class ids), top5_logit (fp16), p_true (fp16): one row per image


def metrics_from_predictions(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """(N,) labels and predictions → {"acc", "macro_f1", "n"} in percent."""
    acc = 100.0 * float((y_true == y_pred).mean()) if len(y_true) else float("nan")
    f1 = 100.0 * f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true)) if len(y_true) else float("nan")
    return {"acc": acc, "macro_f1": float(f1), "n": int(len(y_true))}


def _loader(items: list[Item], backbone, batch_size: int, num_workers: int):
    tf = test_transform(backbone.image_size, backbone.mean, backbone.std)
    return torch.utils.data.DataLoader(ImageSet(items, tf), batch_size=batch_size, shuffle=False,
                                       num_workers=num_workers)


def image_batches(items: list[Item], backbone, device: torch.device, opts: EvalOptions):
    """Normalised test images on `device`, in item order: from the decoded cache (fast) or a DataLoader (slow)."""
    if opts.fast:
        yield from iter_decoded(decoded_split(items, backbone.image_size), opts.batch, device, backbone.mean,
                                backbone.std)
    else:
        for x, _ in _loader(items, backbone, opts.batch, opts.num_workers):
            yield x.to(device, non_blocking=True)


class FeatureCache:
    """Frozen-tower image features per (backbone, image list); in memory, and on disk when `folder` is set."""

    def __init__(self, folder: Path | None = None, max_items: int = 16):
        self.folder = folder
        self.memory: dict[str, torch.Tensor] = {}
        self.max_items = max_items

    @staticmethod
    def key(backbone_id: str, items: list[Item], image_size: int, precision: str = "fp32") -> str:
        """Backbone (weights and activation), input size, autocast precision, and each image's path/size/mtime."""
        return items_key(f"{backbone_id}|{image_size}|{precision}", items)

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
def image_features(method, items: list[Item], device: torch.device, opts: EvalOptions,
                   cache: FeatureCache | None = None) -> torch.Tensor:
    """(N, D) fp32 `clip.encode_image` features of the pristine (frozen) image tower, cached when possible."""
    bb = method.backbone
    precision = str(opts.amp).replace("torch.", "") if opts.amp else "fp32"
    key = FeatureCache.key(bb.id, items, bb.image_size, precision) if cache is not None else None
    if key is not None and (hit := cache.get(key)) is not None:
        return hit
    with autocast(device, opts.amp):
        feats = [method.clip.encode_image(x).float() for x in image_batches(items, bb, device, opts)]
    out = torch.cat(feats).cpu() if feats else torch.zeros(0)         # one copy back, not one per batch
    if key is not None:
        cache.put(key, out)
    return out


@torch.no_grad()
def evaluate(method, items: list[Item], device: torch.device, opts: EvalOptions | None = None,
             cache: FeatureCache | None = None) -> Evaluation:
    """Metrics and per-image predictions under the run's autocast (as training; the official code evaluates in
    fp16), with fp32 logits."""
    opts = opts or EvalOptions()
    method.eval()
    method.to(device)
    labels = torch.tensor([it.label for it in items], dtype=torch.long)
    on_device = labels.to(device)
    if method.frozen_image_tower:
        feats = image_features(method, items, device, opts, cache).to(device)
        inputs = (feats[i:i + opts.batch] for i in range(0, len(feats), opts.batch))
        head = method.logits_from_features
    else:
        inputs = image_batches(items, method.backbone, device, opts)

        def head(images: torch.Tensor) -> torch.Tensor:
            return method(images).logits
    rows, start = [], 0
    with autocast(device, opts.amp):
        for x in inputs:
            logits = head(x).float()                                         # (B, C)
            y = on_device[start:start + len(logits)]
            start += len(logits)
            k = min(TOPK, logits.shape[1])
            top = logits.topk(k, dim=-1)
            p_true = logits.softmax(-1).gather(1, y[:, None])[:, 0]
            rows.append((top.indices.int(), top.values.half(), p_true.half()))    # stay on the device: no sync
    top5 = torch.cat([r[0] for r in rows]).cpu().numpy() if rows else np.zeros((0, TOPK), np.int32)
    predictions = {"label": labels.numpy().astype(np.int32), "top5": top5,
                   "top5_logit": torch.cat([r[1] for r in rows]).cpu().numpy() if rows else
                   np.zeros((0, TOPK), np.float16),
                   "p_true": torch.cat([r[2] for r in rows]).cpu().numpy() if rows else np.zeros(0, np.float16)}
    pred = top5[:, 0] if len(top5) else np.zeros(0, dtype=np.int32)
    return Evaluation(metrics_from_predictions(labels.numpy(), pred), predictions)
