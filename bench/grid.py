"""Expand methods × datasets × shots × seeds × protocol into cells (no torch).

Usage:
    >>> from bench.grid import Grid, expand
    >>> cells = expand(Grid(methods=["clipfit", "coop"], datasets=["dtd"], shots=[1, 16], seeds=[1, 2, 3],
    ...                     data_root="/data", backbone="ViT-B-16", pretrained="openai"))
    >>> cells[0]["cell_id"], cells[0]["config"]["train"]["epochs"]

A cell is a plain JSON-able dict: `config` (everything that defines the result), `cell_id` (sha256 of the
canonical config and the few-shot manifest hash, 16 hex), `data_root` and `manifest_sha256`. Protocols:
fewshot (all classes, K ∈ shots), base2new (K = 16 unless --shots, train on base, test base and new),
xd (train on the source — ImageNet — and test on the other datasets), dg (train on ImageNet, test on V2/Sketch/A/R).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cards
from bench.backbone_spec import resolve_backbone
from bench.config import TRAIN_KEYS, as_dict, eval_settings, known_settings, resolve
from bench.data.fewshot import manifest, manifest_sha256, sample_fewshot
from bench.data.splits import read_splits
from bench.errors import BenchError
from bench.regime import check_regime

PROTOCOLS = ("fewshot", "base2new", "xd", "dg")
DG_TARGETS = ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]


@dataclass
class Grid:
    methods: list[str]
    datasets: list[str]
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    protocol: str = "fewshot"
    backbone: str = "ViT-B-16"
    pretrained: str | None = "openai"
    data_root: str = "data"
    suite: str | None = None
    sets: dict[str, Any] = field(default_factory=dict)
    activation: str | None = None      # quick_gelu | gelu | None (decided from the weights, see backbone_spec)
    source: str | None = None          # xd/dg: the training dataset (default imagenet)
    targets: list[str] | None = None   # xd/dg: evaluated datasets (default: the other datasets / the variants)
    regime: str = "default"            # default | published (bench.regime): part of a non-default cell's config


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


IDENTITY_EXCLUDED = ("method_title", "dataset_title", "suite")     # display names: never part of a cell's identity


def cell_identity_hash(config: dict, manifest_sha256: str | None) -> str:
    """A cell's id: the hash of its config (titles and suite name left out) and its few-shot manifest, 16 hex.

    `expand` names cells with it and `bench verify` recomputes it from a result.json, so they cannot disagree."""
    identity = {k: v for k, v in config.items() if k not in IDENTITY_EXCLUDED}
    return canonical_hash([identity, manifest_sha256])[:16]


@functools.lru_cache(maxsize=64)
def dataset_splits(dataset: str, data_root: str):
    """A dataset's items (read once per process: planning, cells and analysis share it)."""
    return read_splits(cards.dataset_card(dataset), Path(data_root))


def fewshot_draw(dataset: str, data_root: str, shots: int, seed: int) -> tuple[list, list, dict]:
    """The few-shot (train, val) draw and its manifest (ImageNet has no few-shot val)."""
    card = cards.dataset_card(dataset)
    splits = dataset_splits(dataset, data_root)
    largest = max(Counter(it.label for it in splits.train).values(), default=0)
    if shots > largest:
        raise BenchError(f"dataset '{dataset}': {shots} shots exceed every class (the largest has {largest} training "
                         "images); pick shots up to that")
    train, val = sample_fewshot(splits, shots, seed, has_val=card.kind != "imagenet")
    return train, val, manifest(dataset, card.version, shots, seed, train, val, Path(data_root))


def fewshot_subset(dataset: str, data_root: str, shots: int, seed: int) -> tuple[list, list, str]:
    """The few-shot (train, val) draw and the sha256 of its manifest."""
    train, val, obj = fewshot_draw(dataset, data_root, shots, seed)
    return train, val, manifest_sha256(obj)


def _check(grid: Grid) -> None:
    if grid.protocol not in PROTOCOLS:
        from bench.errors import did_you_mean

        raise did_you_mean("protocol", grid.protocol, PROTOCOLS)
    check_regime(grid.regime)
    for k in grid.shots:
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise BenchError(f"shots must be positive integers, got {k!r}")
    for name in grid.methods:
        cards.method_card(name)
    _check_grid_settings(grid)
    for name in grid.datasets + ([grid.source] if grid.source else []) + (grid.targets or []):
        cards.dataset_card(name)
    if not grid.datasets and (grid.protocol in ("fewshot", "base2new") or (grid.protocol == "xd" and not grid.targets)):
        raise BenchError(f"no datasets to run: pass --datasets a,b or --suite ({', '.join(cards.suites())})"
                         + (" or --targets" if grid.protocol == "xd" else ""))


def _check_grid_settings(grid: Grid) -> None:
    """A grid-wide setting (--set, a suite's `train`) applies to the selected methods that have it; a name that
    none of them (nor the trainer) has is refused."""
    suite = cards.suite(grid.suite) if grid.suite else {}
    known = set().union(*(known_settings(m) for m in grid.methods)) if grid.methods else set(TRAIN_KEYS)
    for source, mapping in (("suite train settings", suite.get("train")), ("--set", grid.sets)):
        if mapping is not None and not isinstance(mapping, dict):
            raise BenchError(f"{source}: expected a mapping of settings, got {type(mapping).__name__}")
        for key in mapping or {}:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise BenchError(f"{source}: unknown setting '{key}': no selected method ({', '.join(grid.methods)}) "
                                 f"nor the trainer has it; {hint}valid: {', '.join(sorted(known))}")


def check_grid(grid: Grid) -> None:
    """Every check that needs neither data nor weights — names, protocol, shots, settings and their values, the
    backbone — as one-line errors: `bench run` runs it before it builds (or waits for) the mini world."""
    expand(grid, with_data=False)


def _layout(grid: Grid) -> list[tuple[str, list[str]]]:
    """(training dataset, evaluated targets) pairs for the protocol."""
    if grid.protocol in ("fewshot", "base2new"):
        return [(d, []) for d in grid.datasets]
    source = grid.source or ("imagenet" if grid.protocol in ("xd", "dg") else grid.datasets[0])
    if grid.targets is not None:
        targets = grid.targets
    elif grid.protocol == "dg":
        targets = DG_TARGETS
    else:
        targets = [d for d in grid.datasets if d != source]
    return [(source, list(targets))]


def expand(grid: Grid, with_data: bool = True) -> list[dict]:
    """All cells of the grid; `with_data` reads split files to fold the few-shot manifest into the cell id."""
    _check(grid)
    suite = cards.suite(grid.suite) if grid.suite else {}
    backbone = resolve_backbone(grid.backbone, grid.pretrained, grid.activation).cell_config()
    cells = []
    for method in grid.methods:
        mcard = cards.method_card(method)
        shots = grid.shots if mcard.uses_shots else [0]
        seeds = grid.seeds if mcard.uses_shots else grid.seeds[:1]
        for dataset, targets in _layout(grid):
            dcard = cards.dataset_card(dataset)
            for k in shots:
                for seed in seeds:
                    params, train = resolve(method, dataset, grid.protocol, k, suite, grid.sets, only_known=True,
                                            regime=grid.regime)
                    config = {
                        "method": method, "method_title": mcard.title, "method_version": mcard.version,
                        "params": params, "train": as_dict(train) if mcard.uses_shots else eval_settings(train),
                        **backbone,
                        "dataset": dataset, "dataset_title": dcard.title, "dataset_version": dcard.version,
                        "suite": grid.suite, "protocol": grid.protocol, "shots": k, "seed": seed,
                        "targets": targets,
                        "target_versions": {t: cards.dataset_card(t).version for t in targets},
                    }
                    if grid.regime != "default":          # default cells keep the ids they always had
                        config["regime"] = grid.regime
                    sha = None
                    if with_data and mcard.uses_shots:
                        sha = fewshot_subset(dataset, grid.data_root, k, seed)[2]
                    cells.append({"cell_id": cell_identity_hash(config, sha), "config": config,
                                  "data_root": str(grid.data_root), "manifest_sha256": sha})
    return cells
