"""Read a results tree into one tidy DataFrame: one row per (cell, evaluation), plus the planned cells.

Usage:
    >>> from bench.report.collect import load_results
    >>> res = load_results("results")             # <root>/runs/**/result.json + <root>/sweeps/*.json
    >>> res.frame.columns[:4].tolist()             # long format: one row per (cell, evaluation)
    ['cell_id', 'status', 'method', 'method_title']
    >>> res.completeness()                         # done / expected / failed / missing / malformed ...

A malformed result.json or sweep file is skipped, counted and logged (or, with strict=True, a one-line error);
when two cells share a KEY (e.g. a rerun after a config change) the completed, then the newer one wins.

Variants: a cell run with settings its card and suite do not give (`--set lam=4`, recorded as `config.variant`)
is a row of its own. `variant` holds its label ("lam=4", "" for the card's own settings and for schema-1
results), `base_method` the card's name, and `method` names the row — the card's name, or `<card>@<label>`
("clipfit@lam=4") — so every table, `bench compare clipfit clipfit@lam=4` and `aggregate` keep variants apart;
`method_title` reads "ClipFit · lam=4".
`bench.report.aggregate` turns the frame into the leaderboard's tables.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.schema import read_result, variant_label

logger = logging.getLogger(__name__)

KEY = ["backbone", "pretrained", "protocol", "method", "variant", "dataset", "shots", "seed", "regime"]
COLUMNS = ["cell_id", "status", "method", "base_method", "variant", "regime", "method_title", "dataset",
           "dataset_title", "suite", "protocol", "shots",
           "seed", "backbone", "pretrained", "eval", "eval_title", "acc", "macro_f1", "n", "trainable_params",
           "total_params", "train_s", "eval_s", "images_per_s", "peak_mem_mb", "device", "git_sha", "finished_at",
           "path", "predictions"]
EXPECTED_COLUMNS = ["cell_id", "method", "variant", "dataset", "protocol", "shots", "seed", "backbone", "pretrained"]
EVAL_TITLES = {"all": "All", "base": "Base", "new": "New", "source": "Source", "target_avg": "Target avg"}
_WARN_LINES = 5


@dataclass
class Results:
    """A loaded results tree: the long frame plus what could not go into it."""

    root: Path
    frame: pd.DataFrame                 # completed rows (one per evaluation) + failed cells (one row, eval NA)
    expected: pd.DataFrame              # the union of the sweeps' cells (EXPECTED_COLUMNS); empty without sweeps
    malformed: list[str] = field(default_factory=list)   # "path: reason" for each skipped file
    superseded: list[str] = field(default_factory=list)  # ids of older cells replaced by a newer one (same KEY)

    @property
    def completed(self) -> pd.DataFrame:
        return completed(self.frame)

    @property
    def failed(self) -> pd.DataFrame:
        """One row per failed cell."""
        return self.frame[self.frame["status"] == "failed"].drop_duplicates("cell_id")

    @property
    def missing(self) -> pd.DataFrame:
        """Expected cells (from the sweeps) with no result.json at all."""
        if self.expected.empty:
            return self.expected
        seen = set(self.frame["cell_id"]) | set(self.superseded)
        return self.expected[~self.expected["cell_id"].isin(seen)]

    def completeness(self) -> dict[str, int]:
        """Counts of cells: done (completed, in the plan when there is one), expected, failed, missing, ..."""
        done_ids = set(self.completed["cell_id"])
        if self.expected.empty:
            expected = len(done_ids) + len(self.failed)
            done, extra = len(done_ids), 0
        else:
            planned = set(self.expected["cell_id"])
            expected, done, extra = len(planned), len(done_ids & planned), len(done_ids - planned)
        return {"done": done, "expected": expected, "failed": len(self.failed), "missing": len(self.missing),
                "malformed": len(self.malformed), "unplanned": extra, "superseded": len(self.superseded)}


def load_results(root: Path | str, strict: bool = False) -> Results:
    """Read `<root>/runs/**/result.json` (never descending into `ckpt/`) and `<root>/sweeps/*.json`.

    A malformed file is skipped, counted in `Results.malformed` and logged as a warning; with `strict=True`
    it raises a one-line BenchError naming the file instead.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"results folder {root} does not exist; pass the --results root of `bench run`")
    runs, sweeps = root / "runs", root / "sweeps"
    if not runs.is_dir() and not sweeps.is_dir():
        raise BenchError(f"{root} holds neither runs/ nor sweeps/; is it a bench results folder?")
    malformed: list[str] = []
    cells: dict[tuple, dict[str, Any]] = {}
    superseded: list[str] = []
    for path in _find_results(runs):
        try:
            doc = _read_result(path)
        except ValueError as err:
            _skip(malformed, f"{path}: {err}", strict)
            continue
        key = tuple({**doc["config"], **_labelled(doc["config"])}[k] for k in KEY)
        old = cells.get(key)
        if old is not None:
            keep, drop = (doc, old) if _newer(doc, old) else (old, doc)
            superseded.append(drop["cell_id"])
            doc = keep
        cells[key] = doc
    rows = [row for doc in cells.values() for row in _rows(doc)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("shots", "seed"):
        frame[col] = frame[col].astype("int64")
    expected = _read_sweeps(sweeps, malformed, strict)
    _warn(malformed, len(superseded))
    return Results(root, frame, expected, malformed, superseded)


def _find_results(runs: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(runs):
        if "result.json" in filenames:
            found.append(os.path.join(dirpath, "result.json"))
            dirnames[:] = []                       # a cell folder: nothing below it is a result
        else:
            dirnames[:] = sorted(d for d in dirnames if d != "ckpt" and not d.startswith("."))
    return found


def _skip(malformed: list[str], line: str, strict: bool) -> None:
    if strict:
        raise BenchError(f"malformed {line}")
    malformed.append(line)


def _warn(malformed: list[str], superseded: int) -> None:
    for line in malformed[:_WARN_LINES]:
        logger.warning("skipped malformed %s", line)
    if len(malformed) > _WARN_LINES:
        logger.warning("... and %d more malformed files skipped", len(malformed) - _WARN_LINES)
    if superseded:
        logger.warning("%d older result(s) superseded by a newer cell with the same method/variant/dataset/"
                       "protocol/shots/seed/backbone", superseded)


def _read_result(path: str) -> dict[str, Any]:
    """Parse and check one result.json (bench.schema, the validation `bench verify` and the writer use); any
    problem is a ValueError whose message is the reason."""
    doc = read_result(path).to_dict()
    doc["_path"] = path
    return doc


def _newer(doc: dict[str, Any], old: dict[str, Any]) -> bool:
    """Which of two cells with the same KEY wins: completed beats failed, then the later finished_at."""
    rank = (doc["status"] == "completed", str(doc.get("finished_at") or ""))
    return rank > (old["status"] == "completed", str(old.get("finished_at") or ""))


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    cfg, cost, env = doc["config"], doc.get("cost") or {}, doc.get("env") or {}
    labelled = _labelled(cfg)
    title = labelled.get("method_title") or cfg.get("method_title") or cfg["method"]
    base = {
        "cell_id": doc["cell_id"], "status": doc["status"], **labelled,
        "method_title": f"{title} · {labelled['variant']}" if labelled["variant"] else title, "dataset": cfg["dataset"],
        "dataset_title": cfg.get("dataset_title") or cfg["dataset"], "suite": cfg.get("suite"),
        "protocol": cfg["protocol"], "shots": int(cfg["shots"]), "seed": int(cfg["seed"]),
        "trainable_params": cost.get("trainable_params"), "total_params": cost.get("total_params"),
        "train_s": cost.get("train_s"), "eval_s": cost.get("eval_s"), "images_per_s": cost.get("images_per_s"),
        "peak_mem_mb": cost.get("peak_mem_mb"), "device": cost.get("device"), "git_sha": env.get("git_sha"),
        "finished_at": doc.get("finished_at"), "path": doc["_path"], "predictions": _predictions_path(doc),
    }
    if doc["status"] != "completed":
        return [{**base, "eval": None, "eval_title": None, "acc": math.nan, "macro_f1": math.nan, "n": None}]
    return [{**base, "eval": name, "eval_title": eval_title(name), "acc": float(m["acc"]),
             "macro_f1": m.get("macro_f1", math.nan), "n": m.get("n")}
            for name, m in doc["metrics"].items()]


def _predictions_path(doc: dict[str, Any]) -> str | None:
    """The cell's predictions.npz (artifacts.predictions, a path inside the cell folder), or None."""
    art = (doc.get("artifacts") or {}).get("predictions") if isinstance(doc.get("artifacts"), dict) else None
    rel = art.get("path") if isinstance(art, dict) else None
    if not isinstance(rel, str) or os.path.isabs(rel) or ".." in Path(rel).parts:
        return None
    return os.path.join(os.path.dirname(doc["_path"]), rel)


def _labelled(cfg: dict[str, Any]) -> dict[str, Any]:
    """A cell's (backbone, pretrained) as tables show them (short labels, the activation in the backbone name) and
    its method as rows name it (the variant after an @)."""
    from bench.backbone_spec import display_backbone, weights_label
    from bench.regime import report_labels

    variant = cfg["variant"] if isinstance(cfg.get("variant"), str) else variant_label(cfg.get("variant"))
    method = f"{cfg['method']}@{variant}" if variant else cfg["method"]
    return {"backbone": display_backbone(cfg["backbone"], cfg.get("activation")),
            "pretrained": weights_label(cfg["pretrained"]), "base_method": cfg["method"], "variant": variant,
            "method": method, **report_labels({**cfg, "method": method})}   # regime; a marked cell's own key, title


def eval_title(name: str) -> str:
    """Display name of an evaluation: All/Base/New/Source, or a target dataset's card title."""
    if name in EVAL_TITLES:
        return EVAL_TITLES[name]
    return dataset_title(name)


def dataset_title(name: str) -> str:
    """A dataset's card title, or the name itself when there is no card."""
    try:
        from bench import cards
        return cards.dataset_card(name).title
    except Exception:  # noqa: BLE001 - a title is cosmetic; never fail aggregation over it
        return name


def _read_sweeps(sweeps: Path, malformed: list[str], strict: bool) -> pd.DataFrame:
    cells: dict[str, dict[str, Any]] = {}
    paths = sorted((p for p in os.scandir(sweeps) if p.name.endswith(".json")), key=lambda p: p.name) if sweeps.is_dir() else []
    for entry in paths:
        try:
            with open(entry.path, encoding="utf-8") as fh:
                doc = json.load(fh)
            listed = doc["cells"]
            for cell in listed:
                cells.setdefault(cell["cell_id"], {k: {**cell, **_labelled(cell)}[k] for k in EXPECTED_COLUMNS})
        except (OSError, ValueError, KeyError, TypeError) as err:
            reason = f"missing key {err}" if isinstance(err, KeyError) else str(err)
            _skip(malformed, f"{entry.path}: {reason}", strict)
    frame = pd.DataFrame(list(cells.values()), columns=EXPECTED_COLUMNS)
    return frame.astype({"shots": "int64", "seed": "int64"}) if len(frame) else frame



def completed(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the rows of completed cells."""
    return frame[frame["status"] == "completed"]
