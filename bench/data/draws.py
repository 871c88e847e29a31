"""A dataset's splits and its few-shot draws, each made once per process (no torch).

Usage:
    >>> from bench.data.draws import dataset_splits, fewshot_draw, fewshot_subset
    >>> splits = dataset_splits("dtd", "/data")                    # read once: planning, cells, analysis share it
    >>> train, val, manifest = fewshot_draw("dtd", "/data", 16, 1)
    >>> train, val, sha = fewshot_subset("dtd", "/data", 16, 1)    # the same draw, with the manifest's sha256

Planning folds the manifest's sha256 into the cell id and the cell trains on the draw and writes the manifest:
they ask for the same (dataset, data root, shots, seed), and get one draw. A draw is remembered with the splits
it was drawn from, so re-reading the splits (`dataset_splits.cache_clear()`, e.g. after a split file changed)
draws again. Callers get their own lists.
"""

from __future__ import annotations

import copy
import functools
from collections import Counter
from pathlib import Path

from bench import cards
from bench.data.fewshot import manifest, manifest_sha256, sample_fewshot
from bench.data.splits import Item, Splits, read_splits
from bench.errors import BenchError

_DRAWS: dict[tuple, tuple[Splits, list[Item], list[Item], dict, str]] = {}
_MAX_DRAWS = 1024


@functools.lru_cache(maxsize=64)
def dataset_splits(dataset: str, data_root: str) -> Splits:
    """A dataset's items (read once per process)."""
    return read_splits(cards.dataset_card(dataset), Path(data_root))


def _draw(dataset: str, data_root: str, shots: int, seed: int) -> tuple[Splits, list[Item], list[Item], dict, str]:
    splits = dataset_splits(dataset, data_root)
    key = (dataset, str(data_root), shots, seed)
    known = _DRAWS.get(key)
    if known is not None and known[0] is splits:
        return known
    card = cards.dataset_card(dataset)
    largest = max(Counter(it.label for it in splits.train).values(), default=0)
    if shots > largest:
        raise BenchError(f"dataset '{dataset}': {shots} shots exceed every class (the largest has {largest} training "
                         "images); pick shots up to that")
    train, val = sample_fewshot(splits, shots, seed, has_val=card.kind != "imagenet")
    obj = manifest(dataset, card.version, shots, seed, train, val, Path(data_root))
    if len(_DRAWS) >= _MAX_DRAWS:
        _DRAWS.clear()
    _DRAWS[key] = entry = (splits, train, val, obj, manifest_sha256(obj))
    return entry


def fewshot_draw(dataset: str, data_root: str, shots: int, seed: int) -> tuple[list[Item], list[Item], dict]:
    """The few-shot (train, val) draw and its manifest (ImageNet has no few-shot val)."""
    _, train, val, obj, _ = _draw(dataset, data_root, shots, seed)
    return list(train), list(val), copy.deepcopy(obj)


def fewshot_subset(dataset: str, data_root: str, shots: int, seed: int) -> tuple[list[Item], list[Item], str]:
    """The few-shot (train, val) draw and the sha256 of its manifest."""
    _, train, val, _, sha = _draw(dataset, data_root, shots, seed)
    return list(train), list(val), sha
