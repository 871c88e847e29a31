"""The typed schema of cells and results, with the one validation the writer, `bench verify` and the collector use.

Usage:
    >>> from bench.schema import Result, SchemaError, read_result
    >>> res = read_result("results/runs/fewshot/dtd/coop/3f2a9c0d1e4b5a67/result.json")   # SchemaError: why not
    >>> res.status, res.metrics["all"]["acc"], res.variant
    ('completed', 71.3, {})
    >>> problem(doc)                        # None, or the first thing wrong with a result dict, in words

A result.json is a `Result` (docs/DESIGN.md shows one). Schema 2 (this bench) adds `runtime` (the device and
precision that actually ran), `config.variant` and `config.target_device`, and names cells by bench.identity's
version-2 rule; schema-1 files are read as they are (`runtime` empty, no variant). No torch, no pandas.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2                 # 2: ids by bench.identity (precision resolved, execution settings left out)
READABLE_VERSIONS = (1, 2)
STATUSES = ("completed", "failed")
CONFIG_KEYS = ("method", "dataset", "protocol", "shots", "seed", "backbone", "pretrained")   # every result has them


class SchemaError(ValueError):
    """A result that does not follow the schema; the message is the reason, one line."""


@dataclass(frozen=True)
class Cell:
    """One cell of a grid (bench.grid.expand), as executors pass it around (plain JSON)."""
    cell_id: str                          # bench.identity.cell_identity_hash(config, manifest_sha256)
    config: dict[str, Any]                # resolved settings, backbone, dataset, protocol, shots, seed, variant, ...
    data_root: str
    manifest_sha256: str | None           # None: zero-shot, or planned without reading the data

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Cell:
        return cls(**{f.name: raw.get(f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Result:
    """One result.json."""
    schema_version: int
    cell_id: str
    status: str                                                  # completed | failed
    config: dict[str, Any]                                       # the cell's config
    data: dict[str, Any] = field(default_factory=dict)           # manifest_sha256, n_train, n_val, n_classes, classes
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)   # evaluation → {acc, macro_f1, n}
    skipped: dict[str, str] = field(default_factory=dict)        # evaluation → why it was not run
    cost: dict[str, Any] = field(default_factory=dict)           # seconds, images/s, memory, parameters, device
    env: dict[str, Any] = field(default_factory=dict)            # versions (bench, git, python, torch, CUDA, ...), host
    runtime: dict[str, Any] = field(default_factory=dict)        # schema 2: device and precision that ran
    started_at: str | None = None
    finished_at: str | None = None
    resumed: bool = False
    error: dict[str, Any] | None = None                          # failed: type, message (one line), log
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)  # name → {path (in the cell folder), sha256}

    @classmethod
    def from_dict(cls, doc: Any) -> Result:
        """The Result of a parsed result.json, or SchemaError naming the first problem."""
        reason = problem(doc)
        if reason:
            raise SchemaError(reason)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def variant(self) -> dict[str, Any]:
        """What `--set` changed from the card and suite ({} for the card's own settings and for schema 1)."""
        return dict(self.config.get("variant") or {})


def variant_label(variant: dict[str, Any] | None) -> str:
    """A variant in words, name=value joined by commas in name order ("lam=4,lr=0.01"); "" for none."""
    return ",".join(f"{k}={_short(v)}" for k, v in sorted((variant or {}).items()))


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "null" if value is None else str(value)


def problem(doc: Any) -> str | None:
    """The one validation: None when `doc` is a result this bench reads, else the first problem in words."""
    if not isinstance(doc, dict):
        return "top level is not a JSON object"
    version = doc.get("schema_version")
    if version not in READABLE_VERSIONS:
        return f"schema_version {version!r} is not supported (this bench reads {', '.join(map(str, READABLE_VERSIONS))})"
    if doc.get("status") not in STATUSES:
        return f"status {doc.get('status')!r} is neither 'completed' nor 'failed'"
    cfg = doc.get("config")
    if not isinstance(cfg, dict):
        return "config is missing"
    absent = [k for k in CONFIG_KEYS if k not in cfg] + ([] if isinstance(doc.get("cell_id"), str) else ["cell_id"])
    if absent:
        return f"missing field(s) {', '.join(absent)}"
    for key in ("shots", "seed"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool):
            return f"config.{key} {cfg[key]!r} is not an integer"
    for key in ("method", "dataset", "protocol"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            return f"config.{key} {cfg[key]!r} is not a name"
    if "variant" in cfg and not isinstance(cfg["variant"], dict):
        return "config.variant is not a mapping"
    for key in ("data", "metrics", "artifacts"):
        if not isinstance(doc.get(key, {}), dict):
            return f"{key} is not a mapping"
    if doc["status"] == "completed":
        if not doc.get("metrics"):
            return "completed but has no metrics"
        for name, m in doc["metrics"].items():
            if not isinstance(m, dict) or isinstance(m.get("acc"), bool) or not isinstance(m.get("acc"), (int, float)):
                return f"metrics.{name}.acc is missing or not a number"
    return None


def parse_json_file(path: Path | str) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, why it cannot be read): empty, truncated, not UTF-8, unreadable."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"
    if not raw.strip():
        return None, "empty file"
    try:
        return json.loads(raw), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as err:
        return None, f"not valid JSON, truncated or corrupt ({err})"


def read_result(path: Path | str) -> Result:
    """A result.json as a Result, or SchemaError with the reason (unreadable, not JSON, or `problem`)."""
    doc, error = parse_json_file(path)
    if error:
        raise SchemaError(error)
    return Result.from_dict(doc)
