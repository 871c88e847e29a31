"""Published numbers as data: load `results/reported/*.yaml` and match them to reproduced rows.

Usage:
    >>> from bench.report.reported import load_reported, match
    >>> entries = load_reported()                      # <root>/reported/ if present, else the shipped files
    >>> ref = match(entries, protocol="base2new", backbone="ViT-B-16", pretrained="openai", dataset="average")
    >>> ref["coop"].metrics["hm"], ref["coop"].verified
    (71.66, True)

File layout (one protocol per file): top-level `protocol`, `backbone`, `pretrained`, optional `shots`, `seeds`,
`average_over` (the datasets an "average" row is over) and `defaults` (merged into every entry), then `entries`:
`{method, title, dataset, shots, metrics: {eval: value}, verified, mark, provenance, note}`. `mark` keeps the
reference's own label (VERIFIED, 3RD-PARTY, RECALL, DERIVED, UNVERIFIED); `verified` is true only for VERIFIED.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.protocols import PROTOCOLS

PACKAGE_DIR = Path(__file__).resolve().parents[1]      # bench/
MARKS = ("VERIFIED", "3RD-PARTY", "RECALL", "DERIVED", "UNVERIFIED")
AVERAGE = "average"
_ENTRY_KEYS = {"method", "title", "dataset", "shots", "metrics", "verified", "mark", "provenance", "note"}


@dataclass(frozen=True)
class Reported:
    """One published row: a method's numbers on one dataset (or the average) for one protocol and K."""

    protocol: str
    backbone: str
    pretrained: str
    method: str
    title: str
    dataset: str                         # a registry name, or "average"
    shots: int
    metrics: dict[str, float | None]     # eval name (base/new/hm/all/source/<target>) → % (None: no number)
    verified: bool
    mark: str
    provenance: str
    note: str = ""
    average_over: tuple[str, ...] = ()   # for dataset == "average": the datasets averaged
    source: str = ""                     # the YAML file

    def value(self, name: str) -> float | None:
        v = self.metrics.get(name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def reported_dirs(root: Path | None = None) -> list[Path]:
    """Where reported YAML files are read from: `<root>/reported/` when it exists (it replaces the defaults),
    else the folders in BENCH_REPORTED_PATH, else the checkout's `results/reported/`."""
    if root is not None and (Path(root) / "reported").is_dir():
        return [Path(root) / "reported"]
    env = [Path(p) for p in os.environ.get("BENCH_REPORTED_PATH", "").split(os.pathsep) if p]
    if env:
        return [p for p in env if p.is_dir()]
    for default in (PACKAGE_DIR / "_reported", PACKAGE_DIR.parent / "results" / "reported"):   # wheel, checkout
        if default.is_dir():
            return [default]
    return []


def load_reported(root: Path | None = None, dirs: Iterable[Path] | None = None) -> list[Reported]:
    """Every entry of every `*.yaml` in `dirs` (default: `reported_dirs(root)`), in file order."""
    from bench.cards import load_yaml

    entries: list[Reported] = []
    for folder in (list(dirs) if dirs is not None else reported_dirs(root)):
        for path in sorted(Path(folder).glob("*.yaml")):
            entries.extend(_parse_file(load_yaml(path), path))
    return entries


def _parse_file(raw: Any, path: Path) -> list[Reported]:
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise BenchError(f"reported file {path} must be a mapping with an 'entries' list")
    for key in ("protocol", "backbone", "pretrained"):
        if not raw.get(key):
            raise BenchError(f"reported file {path}: top-level '{key}' is missing")
    if raw["protocol"] not in PROTOCOLS:
        raise BenchError(f"reported file {path}: unknown protocol '{raw['protocol']}'; valid: {', '.join(PROTOCOLS)}")
    defaults = raw.get("defaults") or {}
    out = []
    for i, item in enumerate(raw["entries"]):
        if not isinstance(item, dict):
            raise BenchError(f"reported file {path}: entry {i} is not a mapping")
        entry = {**defaults, **item}
        out.append(_parse_entry(entry, raw, f"{path}: entry {i} ({entry.get('method', '?')})", str(path)))
    return out


def _parse_entry(entry: dict[str, Any], top: dict[str, Any], where: str, source: str) -> Reported:
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise BenchError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(_ENTRY_KEYS))}")
    missing = [k for k in ("method", "dataset", "metrics", "verified", "mark", "provenance") if k not in entry]
    if missing:
        raise BenchError(f"{where}: missing key(s) {', '.join(missing)}")
    if entry["mark"] not in MARKS:
        raise BenchError(f"{where}: mark '{entry['mark']}' is unknown; valid: {', '.join(MARKS)}")
    if bool(entry["verified"]) != (entry["mark"] == "VERIFIED"):
        raise BenchError(f"{where}: verified: {entry['verified']} contradicts mark {entry['mark']}")
    metrics = entry["metrics"]
    if not isinstance(metrics, dict) or not all(v is None or isinstance(v, (int, float)) for v in metrics.values()):
        raise BenchError(f"{where}: metrics must map evaluation names to numbers or null")
    shots = entry.get("shots", top.get("shots"))
    if shots is None:
        raise BenchError(f"{where}: 'shots' is missing (set it on the entry or at the top of the file)")
    return Reported(
        protocol=str(top["protocol"]), backbone=_backbone(top), pretrained=str(top["pretrained"]),
        method=str(entry["method"]), title=str(entry.get("title") or entry["method"]),
        dataset=str(entry["dataset"]), shots=int(shots),
        metrics={str(k): (None if v is None else float(v)) for k, v in metrics.items()},
        verified=bool(entry["verified"]), mark=str(entry["mark"]), provenance=str(entry["provenance"]),
        note=str(entry.get("note") or ""), average_over=tuple(top.get("average_over") or ()), source=source)


def _backbone(top: dict[str, Any]) -> str:
    """The backbone as reproduced rows label it (with -quickgelu for weights trained with QuickGELU)."""
    from bench.backbone_spec import display_backbone, tag_quick_gelu

    backbone, pretrained = str(top["backbone"]), str(top["pretrained"])
    return display_backbone(backbone, "quick_gelu" if tag_quick_gelu(backbone, pretrained) else "gelu")


def match(entries: Iterable[Reported], *, protocol: str, backbone: str, pretrained: str, dataset: str,
          shots: int | None = None) -> dict[str, Reported]:
    """The entries for one reproduced row group, by method: same protocol, backbone, pretrained and dataset
    ("average" for the average rows), and the same K when `shots` is given (zero-shot entries match K = 0)."""
    out: dict[str, Reported] = {}
    for e in entries:
        if (e.protocol, e.backbone, e.pretrained, e.dataset) != (protocol, backbone, pretrained, dataset):
            continue
        if shots is not None and e.shots != shots and not (e.shots == 0 and e.method == "zeroshot"):
            continue
        out.setdefault(e.method, e)
    return out


def delta(reproduced: float | None, reported: float | None) -> float | None:
    """Reproduced − reported, or None when either is missing."""
    if reproduced is None or reported is None or math.isnan(reproduced) or math.isnan(reported):
        return None
    return float(reproduced) - float(reported)


def comparable_average(entry: Reported, datasets: Iterable[str]) -> bool:
    """Whether a reproduced average over `datasets` may be compared with an average entry."""
    return entry.dataset != AVERAGE or not entry.average_over or set(entry.average_over) == set(datasets)


def reported_frame(entries: Iterable[Reported]) -> Any:
    """The entries as a long pandas DataFrame: one row per (entry, evaluation) with a value."""
    import pandas as pd

    rows = [{"protocol": e.protocol, "backbone": e.backbone, "pretrained": e.pretrained, "method": e.method,
             "title": e.title, "dataset": e.dataset, "shots": e.shots, "eval": name, "value": value,
             "verified": e.verified, "mark": e.mark, "provenance": e.provenance, "note": e.note,
             "source": e.source} for e in entries for name, value in e.metrics.items() if value is not None]
    return pd.DataFrame(rows)


def _reproduced(tables: dict[str, Any]) -> dict[tuple, tuple[dict[str, float], tuple[str, ...]]]:
    """(protocol, backbone, pretrained, method, dataset, shots) → ({eval: value}, datasets averaged)."""
    out: dict[tuple, tuple[dict[str, float], tuple[str, ...]]] = {}
    for proto in PROTOCOLS.values():
        if proto.transfer:
            for rec in (tables[proto.tables[0]].to_dict("records") if proto.tables[0] in tables else []):
                key = (proto.name, rec["backbone"], rec["pretrained"], rec["method"], rec["dataset"], int(rec["shots"]))
                out.setdefault(key, ({}, (rec["dataset"],)))[0][rec["eval"]] = float(rec["mean"])
            continue
        for name, is_avg in zip(proto.tables, (False, True)):
            cols = ({e: e if is_avg else f"{e}_mean" for e in proto.own_evals} | {"hm": "hm"} if proto.class_split
                    else {proto.own_evals[0]: "acc" if is_avg else "mean"})
            for rec in (tables[name].to_dict("records") if name in tables else []):
                dataset = AVERAGE if is_avg else rec["dataset"]
                over = tuple(str(rec["datasets"]).split(",")) if is_avg else (dataset,)
                key = (proto.name, rec["backbone"], rec["pretrained"], rec["method"], dataset, int(rec["shots"]))
                out[key] = ({k: float(rec[c]) for k, c in cols.items()}, over)
    return out


def compare(tables: dict[str, Any], entries: Iterable[Reported]) -> Any:
    """Match published entries to reproduced rows (same protocol, backbone, pretrained, method, dataset, K;
    zero-shot matches at any K). One row per (entry, evaluation): reproduced, reported, delta = reproduced −
    reported, comparable (False when a reproduced average is over other datasets than the published one).
    Entries without a reproduced counterpart are kept with reproduced = NaN. `tables` is
    `bench.report.aggregate.summaries(...)`."""
    import pandas as pd

    repro = _reproduced(tables)
    rows = []
    for e in entries:
        key = (e.protocol, e.backbone, e.pretrained, e.method, e.dataset, e.shots)
        found = repro.get(key)
        if found is None and e.method == "zeroshot":
            same = sorted(k for k in repro if k[:5] == key[:5])
            found = repro[same[0]] if same else None
        values, over = found if found is not None else ({}, ())
        reported = dict(e.metrics)
        proto = PROTOCOLS[e.protocol]
        own = proto.own_evals
        if proto.transfer:
            targets = [k for k in reported if k not in own]
            if targets and all(reported[k] is not None for k in targets):
                reported["target_avg"] = sum(reported[k] for k in targets) / len(targets)
            same_targets = set(targets) == {k for k in values if k not in (*own, "target_avg")}
        for name, ref in reported.items():
            if ref is None:
                continue
            mine = values.get(name, math.nan)
            ok = comparable_average(e, over) if found is not None else False
            if name == "target_avg":
                ok = ok and same_targets
            rows.append({"protocol": e.protocol, "backbone": e.backbone, "pretrained": e.pretrained,
                         "method": e.method, "title": e.title, "dataset": e.dataset, "shots": e.shots,
                         "eval": name, "reproduced": mine, "reported": ref,
                         "delta": (delta(mine, ref) if ok else None), "matched": found is not None,
                         "comparable": ok, "verified": e.verified,
                         "mark": e.mark, "provenance": e.provenance, "note": e.note})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["delta"] = frame["delta"].astype(float)
    return frame
