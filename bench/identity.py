"""A cell's id: the hash of exactly what can change its numbers (no torch).

Usage:
    >>> from bench.identity import cell_identity_hash
    >>> cell_identity_hash(cell["config"], cell["manifest_sha256"])            # the rule of this bench (schema 2)
    >>> cell_identity_hash(old["config"], old["data"]["manifest_sha256"], schema_version=1)

Schema 2 hashes the method and its parameters, the training settings with `precision` already resolved for the
device the cell was planned for (bench.grid), the backbone, weights and activation, the dataset, protocol, shots,
seed, targets and card versions, and the few-shot manifest. It leaves out display names (titles), the suite's name,
the variant label, the planned device (the resolved precision carries what it changes) and the execution settings
of `bench.config.EXECUTION_KEYS`. Schema 1 hashed the whole config but the titles and the suite, `precision: auto`
unresolved; `bench verify` checks a version-1 result by that rule.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bench.config import EXECUTION_KEYS

RECORD_ONLY = ("method_title", "dataset_title", "suite", "variant", "target_device")   # config fields not hashed
V1_EXCLUDED = ("method_title", "dataset_title", "suite")


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def numeric_settings(config: dict) -> dict[str, Any]:
    """The cell's `train` mapping without its execution settings: what the id hashes of it."""
    train = config.get("train") or {}
    slow_training = train.get("fast") is False and bool(config.get("shots"))
    return {k: v for k, v in train.items()
            if k not in EXECUTION_KEYS or (k == "num_workers" and slow_training and v)}


def identity(config: dict, schema_version: int = 2) -> dict[str, Any]:
    """The part of a cell config its id is the hash of."""
    if schema_version == 1:
        return {k: v for k, v in config.items() if k not in V1_EXCLUDED}
    out = {k: v for k, v in config.items() if k not in RECORD_ONLY}
    out["train"] = numeric_settings(config)
    return out


def cell_identity_hash(config: dict, manifest_sha256: str | None, schema_version: int = 2) -> str:
    """A cell's id: 16 hex of the hash of its identity and its few-shot manifest. `bench.grid.expand` names cells
    with it and `bench verify` recomputes it from a result.json (by the rule of the result's schema version)."""
    return canonical_hash([identity(config, schema_version), manifest_sha256])[:16]
