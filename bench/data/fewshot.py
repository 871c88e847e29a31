"""Few-shot sampling identical to Dassl's, the few-shot manifest, and the base/new class split (no torch).

Usage:
    >>> from bench.data.fewshot import sample_fewshot, base_new_split
    >>> train, val = sample_fewshot(splits, shots=16, seed=1, has_val=True)
    >>> base = base_new_split(train, val, splits.test, "base")

Dassl seeds Python's global `random` with the seed, then draws the train subset (classes in order of first
appearance in the split list, `random.sample(items, K)` per class, all items when a class has fewer than K),
then the val subset the same way with K_val = min(K, 4), from the same stream. A private `random.Random(seed)`
produces the same draws without touching global state.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import NamedTuple

from bench.data.splits import Item, Splits
from bench.errors import BenchError


def _by_label(items: list[Item]) -> dict[int, list[Item]]:
    groups: dict[int, list[Item]] = {}
    for it in items:                      # dict keeps first-appearance order, like Dassl's defaultdict
        groups.setdefault(it.label, []).append(it)
    return groups


def _draw(rng: random.Random, items: list[Item], k: int) -> list[Item]:
    out: list[Item] = []
    for group in _by_label(items).values():
        out += rng.sample(group, k) if len(group) >= k else list(group)
    return out


def sample_fewshot(splits: Splits, shots: int, seed: int, has_val: bool = True) -> tuple[list[Item], list[Item]]:
    """(train, val) few-shot subsets; `shots` ≤ 0 means the full train/val sets."""
    if not isinstance(shots, int) or isinstance(shots, bool):
        raise BenchError(f"shots must be an integer, got {shots!r}")
    if shots <= 0:
        return list(splits.train), list(splits.val)
    rng = random.Random(seed)
    train = _draw(rng, splits.train, shots)
    val = _draw(rng, splits.val, min(shots, 4)) if has_val and splits.val else []
    return train, val


class ClassSplit(NamedTuple):
    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]
    labels: list[int]      # the original labels kept, in new-label order


def base_new_split(train: list[Item], val: list[Item], test: list[Item], which: str) -> ClassSplit:
    """Keep the base (first ceil(n/2) sorted train labels) or new classes, relabelled 0..k-1."""
    if which not in ("base", "new", "all"):
        raise BenchError(f"class subset must be base, new or all, got {which!r}")
    labels = sorted({it.label for it in train})
    m = math.ceil(len(labels) / 2)
    keep = labels if which == "all" else labels[:m] if which == "base" else labels[m:]
    relabel = {old: new for new, old in enumerate(keep)}

    def sub(items: list[Item]) -> list[Item]:
        return [Item(it.path, relabel[it.label], it.classname) for it in items if it.label in relabel]

    names: dict[int, str] = {}
    for it in train + test:
        names.setdefault(it.label, it.classname)
    return ClassSplit(sub(train), sub(val), sub(test), [names[old] for old in keep], keep)


def manifest(dataset: str, version: int, shots: int, seed: int, train: list[Item], val: list[Item],
             data_root: Path) -> dict:
    """The chosen subset as a portable JSON object: image paths (relative to the data root) per class."""
    root = str(Path(data_root).expanduser().resolve())

    def rel(p: str) -> str:
        return p[len(root) + 1:] if p.startswith(root + "/") else p

    def per_class(items: list[Item]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for it in items:
            out.setdefault(it.classname, []).append(rel(it.path))
        return out

    return {"dataset": dataset, "dataset_version": version, "shots": shots, "seed": seed,
            "train": per_class(train), "val": per_class(val)}


def manifest_bytes(obj: dict) -> bytes:
    """The canonical JSON of a manifest: what `fewshot_manifest.json` holds, so its sha256 is manifest_sha256."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def manifest_sha256(obj: dict) -> str:
    return hashlib.sha256(manifest_bytes(obj)).hexdigest()
