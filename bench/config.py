"""Resolve a cell's settings through ten layers, lowest first (LAYERS): code defaults < card params < card train <
card overrides < the regime (--regime published) < suite train < suite method_settings < suite input < the grid
file's set < --set.

Usage:
    >>> from bench.config import resolve
    >>> params, train = resolve("clipfit", dataset="dtd", protocol="fewshot", shots=16)
    >>> params["lam"], train.epochs
    (8.0, 100)

`TrainConfig` holds everything the trainer needs; method-specific hyperparameters stay in the method card's
`params`. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, fields
from typing import Any

import yaml

from bench import cards, settings
from bench.errors import BenchError
from bench.regime import regime_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "sgd"                 # sgd (Dassl: momentum 0.9, wd on every trainable tensor) | adamw
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 32
    drop_last: str | bool = "auto"         # auto (Dassl: drop the last partial batch only when the set holds a full one) | true | false
    epochs: int | None = 100               # epoch budget (Dassl methods)
    iters_per_shot: int | None = None      # iteration budget = iters_per_shot × K (CLIP-LoRA: 500); wins over epochs
    schedule: str = "dassl_cosine"         # dassl_cosine (per epoch, epoch 0 constant warmup_lr) | cosine_iter | constant
    warmup_epochs: int = 1                 # dassl_cosine: epochs held at warmup_lr ("constant" warm-up)
    warmup_lr: float = 1e-5
    warmup_iters: int = 0                  # cosine_iter: linear warm-up from 0 over this many iterations
    min_lr: float = 0.0                    # cosine floor (CLIP-LoRA: 1e-6)
    precision: str = "auto"                # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (fp32 master weights)
                                           # | pure_fp16 (the official fp16 regime: fp16 weights, no master copy, no scaler)
    test_batch_size: int = 100             # slow path (Dassl's test batch)
    eval_batch_size: int = 500             # fast path: batches read from the decoded test cache
    num_workers: int = 0
    fast: bool = True                      # decode once, augment on the device, decoded test cache, prompts cut at
                                           # their end-of-text token; false = the PIL/DataLoader path, full context
    compile: bool = False                  # torch.compile the model for training (opt-in; see README)
    grad_clip: float | None = None
    rrc_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop scale of the train transform
    ckpt_every: int = 1                    # epochs between training-state checkpoints (at most; see ckpt_interval_s)
    ckpt_interval_s: float = 120.0         # seconds at least between checkpoints (0: every ckpt_every epochs)
    cuda_graphs: bool = True               # CUDA: replay the training step from a CUDA graph, eager where it cannot
                                           # be captured (bench/train_step.py); no effect on the CPU
    budget_scale: float = 1.0              # multiplies the epoch / iteration budget (the mini suite shrinks it)

    def total_epochs(self) -> int:
        return max(1, math.ceil((self.epochs or 0) * self.budget_scale))

    def total_iters(self, shots: int, iters_per_epoch: int) -> int:
        if self.iters_per_shot:
            return max(1, math.ceil(self.iters_per_shot * max(shots, 1) * self.budget_scale))
        return self.total_epochs() * iters_per_epoch


TRAIN_KEYS = {f.name for f in fields(TrainConfig)}

# Execution settings: how fast a cell runs, never what it computes. They are recorded in the cell's config (and its
# result.json) but left out of its id, so changing one reuses a finished cell instead of rerunning it. Names not (yet)
# fields of TrainConfig are tolerated. num_workers is the one conditional member: on the slow path (fast: false) each
# DataLoader worker draws training augmentations from its own generator, so there it is part of the id
# (bench.identity).
EXECUTION_KEYS = frozenset({
    "eval_batch_size",      # test-cache batch of the fast path: per-image outputs do not depend on it
    "test_batch_size",      # batch of the slow path's test loader (likewise)
    "num_workers",          # DataLoader processes (see above)
    "compile",              # torch.compile of the training forward: same graph, fused kernels
    "cuda_graphs",          # captured CUDA graphs replay the same kernels
    "ckpt_every",           # checkpoint cadence in epochs: resuming is bit-identical
    "ckpt_interval_s",      # checkpoint cadence in seconds
})
PRECISIONS = {"cuda": "bf16", "cpu": "fp32"}     # what precision "auto" means on each device kind

# Ranges of the TrainConfig fields (types come from the annotations above, so a new field is type-checked by
# default; give it a range here). An interval or the allowed values; null passes wherever the type allows it.
LIMITS: dict[str, Any] = {
    "optimizer": ["sgd", "adamw"],
    "lr": "(0, inf)",
    "momentum": "[0, 1)",
    "weight_decay": "[0, inf)",
    "betas": "[0, 1)",
    "batch_size": "[1, inf)",
    "drop_last": ["auto", True, False],
    "epochs": "[1, inf)",
    "iters_per_shot": "[1, inf)",
    "schedule": ["dassl_cosine", "cosine_iter", "constant"],
    "warmup_epochs": "[0, inf)",
    "warmup_lr": "[0, inf)",
    "warmup_iters": "[0, inf)",
    "min_lr": "[0, inf)",
    "precision": ["auto", "fp32", "bf16", "fp16", "pure_fp16"],
    "test_batch_size": "[1, inf)",
    "eval_batch_size": "[1, inf)",
    "num_workers": "[0, inf)",
    "grad_clip": "(0, inf)",
    "rrc_scale": "(0, 1] ascending",
    "ckpt_every": "[1, inf)",
    "ckpt_interval_s": "[0, inf)",
    "budget_scale": "(0, inf)",
}
TRAIN_FIELDS = settings.dataclass_fields(TrainConfig, LIMITS)


def method_fields(method: str) -> dict[str, settings.Field]:
    """A method's parameters with types and ranges: its Params dataclass, read without importing the method
    (bench.settings); a card without code falls back to the types of the card's values."""
    from bench.methods import method_fields as read_params  # the registry package imports no method module

    found = read_params(method)
    return found if found is not None else settings.fields_from_values(cards.method_card(method).params, method)


def known_settings(method: str) -> set[str]:
    """Every name `--set` may give for this method: its parameters and the trainer's settings."""
    return set(method_fields(method)) | set(cards.method_card(method).params) | TRAIN_KEYS


def _matches(when: dict[str, Any], ctx: dict[str, Any]) -> bool:
    for key, want in when.items():
        values = want if isinstance(want, list) else [want]
        if ctx.get(key) not in values:
            return False
    return True


def _apply(method: str, params: dict, train: dict, updates: dict[str, Any] | None, source: str,
           only_known: bool = False, origins: dict[str, str] | None = None) -> None:
    """Set each key on the method's params or the trainer's settings, coerced to its type and range-checked.
    `only_known`: skip names this method does not know (a grid-wide --set, checked against all methods)."""
    if updates is not None and not isinstance(updates, dict):
        raise BenchError(f"{source}: expected a mapping of settings, got {type(updates).__name__}")
    pfields = method_fields(method)
    for key, value in (updates or {}).items():
        if key in pfields or key in params:
            field = pfields.get(key) or settings.Field(key, owner=method)
            params[key] = settings.coerce(field, value, source)
        elif key in TRAIN_KEYS:
            train[key] = settings.coerce(TRAIN_FIELDS[key], value, source)
        elif only_known:
            continue
        else:
            valid = sorted(set(pfields) | set(params) | TRAIN_KEYS)
            raise BenchError(f"{source}: unknown setting '{key}'; valid: {', '.join(valid)}")
        if origins is not None:
            origins[key] = source
        logger.debug("%s sets %s=%r", source, key, value)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """Parse `--set key=value` items; values are YAML scalars (so 0, false, 1e-3, [0.5, 1.0] work)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise BenchError(f"--set {item}: the value is not valid YAML ({problem})") from None
    return out


def resolve(method: str, dataset: str, protocol: str, shots: int, suite: dict[str, Any] | None = None,
            sets: dict[str, Any] | None = None, only_known: bool = False, file_sets: dict[str, Any] | None = None,
            origins: dict[str, str] | None = None, regime: str = "default") -> tuple[dict[str, Any], TrainConfig]:
    """Return (method params, TrainConfig) for one cell, applying every layer in precedence order (LAYERS; the
    regime's settings, bench.regime, come after the card's overrides and before the suite and --set).

    Every value is coerced to its field's type and range-checked (BenchError naming the layer). `only_known`:
    the grid-wide layers (suite `train`, the grid file's `set`, --set) skip names this method does not have;
    `bench.grid` checks that some selected method has each. `origins`, when given, receives for each name set by
    a layer the last layer that set it (what `bench plan --explain` prints)."""
    card = cards.method_card(method)
    params: dict[str, Any] = {}
    train = {f.name: getattr(TrainConfig(), f.name) for f in fields(TrainConfig)}
    pfields = method_fields(method)
    unknown = sorted(set(card.params) - set(pfields))
    if unknown:
        raise BenchError(f"method card {card.path}: params {', '.join(unknown)} not in {method}'s parameters; "
                         f"valid: {', '.join(sorted(pfields))}")

    def apply(updates, source, grid_wide=False):
        _apply(method, params, train, updates, source, only_known and grid_wide, origins)

    apply(card.params, f"method card {card.path} params")
    apply(card.train, f"method card {card.path} train")
    ctx = {"dataset": dataset, "protocol": protocol, "shots": shots}
    for i, rule in enumerate(card.overrides):
        if not isinstance(rule, dict) or "set" not in rule:
            raise BenchError(f"method card {card.path}: overrides[{i}] needs 'when' and 'set'")
        if _matches(rule.get("when") or {}, ctx):
            apply(rule["set"], f"method card {card.path} overrides[{i}]")
    apply(regime_settings(method, dataset, regime), f"regime {regime}")
    suite = suite or {}
    apply(suite.get("train"), "suite train settings", grid_wide=True)
    apply((suite.get("method_settings") or {}).get(method), f"suite settings for {method}")
    if "rrc_scale" in (suite.get("input") or {}):
        apply({"rrc_scale": suite["input"]["rrc_scale"]}, "suite input")
    apply(file_sets, "grid file set", grid_wide=True)
    apply(sets, "--set", grid_wide=True)
    for key in ("betas", "rrc_scale"):
        train[key] = tuple(train[key])
    try:
        return params, TrainConfig(**train)
    except TypeError as err:
        raise BenchError(f"invalid training settings for {method}: {err}") from None


# The layers of `resolve`, lowest first (README "Settings and precedence", DESIGN.md "Precedence and identity").
LAYERS = ("TrainConfig / the method's Params defaults", "method card params", "method card train",
          "method card overrides (first to last matching rule)", "regime (--regime published; bench.regime)",
          "suite train", "suite method_settings",
          "suite input", "grid file (--config) set", "--set")


def eval_settings(train: TrainConfig) -> dict[str, Any]:
    """The settings of an evaluation-only cell (zero-shot): the autocast precision it evaluates under (the fast path
    evaluates the same pixels as the slow one, so `fast` is recorded only when false) and the execution settings
    (recorded, not part of its id)."""
    execution = {k: v for k, v in as_dict(train).items() if k in EXECUTION_KEYS}
    return {"precision": train.precision, **({} if train.fast else {"fast": False}), **execution}


def resolve_precision(precision: str, device: str) -> str:
    """`auto` made concrete for the device kind ("cuda" or "cpu") a cell is planned for; other values stay."""
    if precision != "auto":
        return precision
    if device not in PRECISIONS:
        raise BenchError(f"device {device!r} is not one of {', '.join(PRECISIONS)}")
    return PRECISIONS[device]


def train_config(raw: dict[str, Any]) -> TrainConfig:
    """A cell config's `train` mapping back into a TrainConfig (JSON turned tuples into lists)."""
    out = dict(raw)
    for key in ("betas", "rrc_scale"):
        if key in out:
            out[key] = tuple(out[key])
    return TrainConfig(**out)


def as_dict(train: TrainConfig) -> dict[str, Any]:
    out = dataclasses.asdict(train)
    for key in ("betas", "rrc_scale"):
        out[key] = list(out[key])
    return out
