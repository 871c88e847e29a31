"""Expand methods × datasets × shots × seeds × protocol into cells (no torch).

Usage:
    >>> from bench.grid import Grid, expand
    >>> cells = expand(Grid(methods=["clipfit", "coop"], datasets=["dtd"], shots=[1, 16], seeds=[1, 2, 3],
    ...                     data_root="/data", backbone="ViT-B-16", pretrained="openai"))
    >>> cells[0]["cell_id"], cells[0]["config"]["train"]["epochs"]

A cell is a plain JSON-able dict: `config` (the resolved settings, `precision` made concrete for the device the
grid is planned for, and the variant: what `--set` changed from the card and suite), `cell_id` (bench.identity: 16
hex of the hash of what can change the cell's numbers and of the few-shot manifest), `data_root` and
`manifest_sha256`. Protocols:
bench.protocols says how each protocol lays out its cells (one per dataset, or a source and its targets).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from bench import cards
from bench.backbone_spec import resolve_backbone
from bench.config import (
    EXECUTION_KEYS,
    TRAIN_KEYS,
    as_dict,
    eval_settings,
    known_settings,
    resolve,
    resolve_precision,
)
from bench.data.draws import dataset_splits, fewshot_draw, fewshot_subset  # noqa: F401 (cell.py imports them here)
from bench.device_target import local_device_kind
from bench.errors import BenchError
from bench.identity import cell_identity_hash
from bench.protocols import DEFAULT as DEFAULT_PROTOCOL
from bench.protocols import protocol as protocol_named
from bench.regime import check_regime
from bench.schema import Cell


@dataclass
class Grid:
    methods: list[str]
    datasets: list[str]
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    protocol: str = DEFAULT_PROTOCOL
    backbone: str = "ViT-B-16"
    pretrained: str | None = "openai"
    data_root: str = "data"
    suite: str | None = None
    sets: dict[str, Any] = field(default_factory=dict)        # --set (the last layer)
    file_sets: dict[str, Any] = field(default_factory=dict)   # the grid file's (--config) `set`, under --set
    device: str | None = None          # cuda | cpu: what `precision: auto` resolves for (None: this machine)
    device_reason: str = ""            # why that device (bench plan --explain)
    activation: str | None = None      # quick_gelu | gelu | None (decided from the weights, see backbone_spec)
    source: str | None = None          # xd/dg: the training dataset (default imagenet)
    targets: list[str] | None = None   # xd/dg: evaluated datasets (default: the other datasets / the variants)
    regime: str = "default"            # default | published (bench.regime): part of a non-default cell's config


def _check(grid: Grid) -> None:
    proto = protocol_named(grid.protocol)
    check_regime(grid.regime)
    for k in grid.shots:
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise BenchError(f"shots must be positive integers, got {k!r}")
    for name in grid.methods:
        cards.method_card(name)
    _check_grid_settings(grid)
    for name in grid.datasets + ([grid.source] if grid.source else []) + (grid.targets or []):
        cards.dataset_card(name)
    proto.check_datasets(grid.datasets, grid.targets)


def _check_grid_settings(grid: Grid) -> None:
    """A grid-wide setting (--set, a suite's `train`) applies to the selected methods that have it; a name that
    none of them (nor the trainer) has is refused."""
    suite = cards.suite(grid.suite) if grid.suite else {}
    known = set().union(*(known_settings(m) for m in grid.methods)) if grid.methods else set(TRAIN_KEYS)
    for source, mapping in (("suite train settings", suite.get("train")), ("grid file set", grid.file_sets),
                            ("--set", grid.sets)):
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


def expand(grid: Grid, with_data: bool = True) -> list[dict]:
    """All cells of the grid; `with_data` reads split files to fold the few-shot manifest into the cell id."""
    _check(grid)
    suite = cards.suite(grid.suite) if grid.suite else {}
    backbone = resolve_backbone(grid.backbone, grid.pretrained, grid.activation).cell_config()
    device = grid.device or local_device_kind()
    layout = protocol_named(grid.protocol).layout(grid.datasets, grid.source, grid.targets)
    cells = []
    for method in grid.methods:
        mcard = cards.method_card(method)
        shots = grid.shots if mcard.uses_shots else [0]
        seeds = grid.seeds if mcard.uses_shots else grid.seeds[:1]
        for dataset, targets in layout:
            dcard = cards.dataset_card(dataset)
            for k in shots:
                for seed in seeds:
                    params, train = resolve(method, dataset, grid.protocol, k, suite, grid.sets, only_known=True,
                                            file_sets=grid.file_sets, regime=grid.regime)
                    train = dataclasses.replace(train, precision=resolve_precision(train.precision, device))
                    settings = as_dict(train) if mcard.uses_shots else eval_settings(train)
                    config = {
                        "method": method, "method_title": mcard.title, "method_version": mcard.version,
                        "params": params, "train": settings,
                        "variant": variant(grid, method, dataset, k, suite, device, {**settings, **params}),
                        "target_device": device,
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
                    cells.append(Cell(cell_identity_hash(config, sha), config, str(grid.data_root), sha).to_dict())
    return cells


def variant(grid: Grid, method: str, dataset: str, shots: int, suite: dict, device: str,
            settings: dict[str, Any]) -> dict[str, Any]:
    """What the grid-wide sets (--set, the grid file's `set`) changed in this cell's `settings` (its params and
    train mapping) from its card and suite, by name: the reports keep such a cell apart from the card's own
    ("ClipFit · lam=4"). Execution settings never make a variant (they do not change numbers)."""
    if not grid.sets and not grid.file_sets:
        return {}
    base_params, base_train = resolve(method, dataset, grid.protocol, shots, suite, only_known=True,
                                      regime=grid.regime)
    base = {**as_dict(dataclasses.replace(base_train, precision=resolve_precision(base_train.precision, device))),
            **base_params}
    return {k: settings[k] for k in sorted(settings) if k not in EXECUTION_KEYS and settings[k] != base.get(k)}


def explain(grid: Grid, cell: dict) -> list[tuple[str, Any, str]]:
    """(name, value, where it came from) for each resolved setting of `cell` (`bench plan --explain`): the layer
    of `bench.config.resolve` that set it last or a code default, the device `precision: auto` was resolved for,
    and whether it is an execution setting (recorded, not part of the cell id)."""
    cfg = cell["config"]
    origins: dict[str, str] = {}
    _, train = resolve(cfg["method"], cfg["dataset"], grid.protocol, cfg["shots"],
                       cards.suite(grid.suite) if grid.suite else {}, grid.sets, only_known=True,
                       file_sets=grid.file_sets, origins=origins, regime=grid.regime)
    rows = []
    for group, default in (("params", f"{cfg['method']}'s Params default"), ("train", "TrainConfig default")):
        for name, value in cfg[group].items():
            where = origins.get(name, default)
            if name == "precision" and train.precision == "auto":
                where += f": auto, resolved for {cfg['target_device']}" + (f" ({grid.device_reason})"
                                                                           if grid.device_reason else "")
            if group == "train" and name in EXECUTION_KEYS:
                where += "; execution setting, not in the cell id"
            rows.append((f"{group}.{name}", value, where))
    for name in ("backbone", "pretrained", "activation", "protocol", "shots", "seed", "targets"):
        rows.append((name, cfg.get(name), "--activation, else what the weights were trained with" if name ==
                     "activation" else "grid: the flag, else the grid file, else the suite, else bench's default"))
    rows.append(("variant", cfg.get("variant") or {}, "what the sets change from card and suite; not in the cell id"))
    return rows
