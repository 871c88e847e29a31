"""Method, dataset and suite cards: YAML files that hold a method's paper settings and a dataset's layout.

Usage:
    >>> from bench import cards
    >>> cards.dataset_card("oxford_pets").template
    'a photo of a {}, a type of pet.'
    >>> cards.method_card("clipfit").params["lam"]
    2.0

Cards live in the top-level `methods/` and `datasets/` folders of a checkout, and inside the wheel as
`bench/_cards/{methods,datasets}`. Extra card folders can be added with BENCH_CARDS_PATH (os.pathsep-separated
folders, each holding `methods/` and/or `datasets/`).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from bench import settings
from bench.errors import BenchError, did_you_mean

PACKAGE_DIR = Path(__file__).resolve().parent

PATH_KEYS = ("folder", "image_dir", "split_file", "classnames_file", "csv_file")   # relative to the data root
IMPLEMENTATION = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")                       # a method card's "module:Class"
DATASET_KINDS = ("split_json", "imagenet", "fgvc", "imagenet_variant", "image_folder", "csv")


def card_dirs(kind: str) -> list[Path]:
    """Folders holding cards of `kind` ("methods" or "datasets"), user folders first."""
    dirs = [Path(p) / kind for p in os.environ.get("BENCH_CARDS_PATH", "").split(os.pathsep) if p]
    for candidate in (PACKAGE_DIR / "_cards" / kind, PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            dirs.append(candidate)
            break
    return [d for d in dirs if d.is_dir()]


def load_yaml(path: Path) -> Any:
    """Read a YAML file; a syntax error becomes a one-line BenchError naming the file and position."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BenchError(f"malformed YAML in {path}{where}: {problem}") from err
    except OSError as err:
        raise BenchError(f"cannot read {path}: {err.strerror}") from err


@functools.cache
def _index(kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in card_dirs(kind):
        for path in sorted(folder.glob("*.yaml")):
            if path.name != "suites.yaml":
                found.setdefault(path.stem, path)
    return found


@dataclass(frozen=True)
class DatasetCard:
    name: str
    title: str
    version: int
    kind: str
    folder: str
    template: str
    image_dir: str = "images"
    split_file: str | None = None
    classnames_file: str | None = None       # imagenet / imagenet_variant: "<wnid> <name>" per line
    label_from: str = "wnid"                 # imagenet_variant: "wnid" (sorted wnid index) or "folder_int"
    classname_fixes: dict[str, str] = field(default_factory=dict)
    drop_classes: tuple[str, ...] = ()       # e.g. Caltech101's BACKGROUND_Google, Faces_easy
    split_ratio: tuple[float, float, float] = (0.5, 0.2, 0.3)  # image_folder / csv without a split column
    csv_file: str | None = None
    path: str = ""                           # the card file itself

    def describe_split_source(self, data_root: Path) -> str:
        base = Path(data_root) / self.folder
        if self.kind in ("split_json", "image_folder") and self.split_file:
            return str(base / self.split_file)
        if self.kind == "csv":
            return str(base / (self.csv_file or "data.csv"))
        return str(base / self.image_dir)


@dataclass(frozen=True)
class MethodCard:
    name: str
    title: str
    version: int
    paper: str
    trains: bool
    params: dict[str, Any]
    train: dict[str, Any]
    overrides: tuple[dict[str, Any], ...]
    uses_shots: bool | None = None           # the grid draws K shots and seeds (default: = trains; Tip-Adapter: yes)
    code: str = ""                           # the official code the card's settings were read from
    trainable: int | str | None = None       # trainable values on ViT-B/16 (int: asserted by the tests) or a formula
    extends: str | None = None               # a card this one starts from (params, train and overrides merged)
    implementation: str | None = None        # "module:Class", the Method subclass (inherited through extends)
    path: str = ""


def _build(cls, raw: Any, path: Path):
    if not isinstance(raw, dict):
        raise BenchError(f"card {path} must be a YAML mapping, got {type(raw).__name__}")
    valid = {f.name for f in fields(cls)} - {"path"}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise BenchError(f"card {path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(valid))}")
    missing = sorted(f.name for f in fields(cls) if f.name not in raw and f.name != "path"
                     and f.default is MISSING and f.default_factory is MISSING)
    if missing:
        raise BenchError(f"card {path}: missing key(s) {', '.join(missing)}")
    raw = settings.check_mapping(settings.dataclass_fields(cls), raw, f"card {path}")
    if raw["name"] != path.stem:
        raise BenchError(f"card {path}: name '{raw['name']}' must be the file's name ('{path.stem}')")
    for key in PATH_KEYS:
        value = raw.get(key)
        if isinstance(value, str) and not is_relative_inside(value):
            raise BenchError(f"card {path}: {key} '{value}' leaves the data root (absolute or '..'); "
                             "give a path relative to it")
    return cls(**raw, path=str(path))


def is_relative_inside(rel: str) -> bool:
    """A relative path that stays below its folder: not empty, not absolute, no '..' part."""
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    return bool(rel) and not rel.startswith(("/", "\\", "~")) and ".." not in parts and ":" not in rel[:2]


@functools.cache
def dataset_card(name: str) -> DatasetCard:
    index = _index("datasets")
    if name not in index:
        raise did_you_mean("dataset", name, index)
    card = _build(DatasetCard, load_yaml(index[name]), index[name])
    if card.kind not in DATASET_KINDS:
        raise BenchError(f"card {card.path}: kind '{card.kind}' is unknown; valid: {', '.join(DATASET_KINDS)}")
    if card.template.count("{}") != 1:
        raise BenchError(f"card {card.path}: template must contain exactly one '{{}}', got {card.template!r}")
    return card


@functools.cache
def method_card(name: str) -> MethodCard:
    index = _index("methods")
    if name not in index:
        raise did_you_mean("method", name, index)
    raw = load_yaml(index[name])
    if isinstance(raw, dict) and raw.get("extends"):
        raw = _extended(raw, index[name])
    elif isinstance(raw, dict) and not raw.get("implementation"):
        raw = {**raw, **_shipped_implementation(name, index[name])}
    if isinstance(raw, dict):
        raw = {"params": {}, "train": {}, "overrides": (), "trains": True, **raw}
    card = _build(MethodCard, raw, index[name])
    if card.implementation is not None and not IMPLEMENTATION.fullmatch(card.implementation):
        raise BenchError(f"card {card.path}: implementation {card.implementation!r} is not 'package.module:Class'")
    return card if card.uses_shots is not None else replace(card, uses_shots=card.trains)


def _shipped_implementation(name: str, path: Path) -> dict[str, str]:
    """A user card that replaces a shipped method card of the same name without saying `implementation` keeps the
    shipped card's (cards written before cards named their classes still run the method they meant)."""
    shipped = card_dirs("methods")[-1] / f"{name}.yaml"
    if not shipped.is_file() or shipped.resolve() == path.resolve():
        return {}
    base = load_yaml(shipped)
    return {"implementation": base["implementation"]} if isinstance(base, dict) and base.get("implementation") else {}


def _extended(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A card with `extends: base`: the base card's params and train settings updated by its own, the base's
    overrides followed by its own; name, title, version, paper, code and trainable are its own (paper and code
    default to the base's)."""
    chain, current = [path.stem], raw
    while isinstance(current, dict) and current.get("extends"):
        if current["extends"] in chain:
            raise BenchError(f"card {path}: 'extends' forms a cycle: {' → '.join(chain + [current['extends']])}")
        chain.append(current["extends"])
        index = _index("methods")
        current = load_yaml(index[chain[-1]]) if chain[-1] in index else None
    base = method_card(raw["extends"])
    out = dict(raw)
    out["params"] = {**base.params, **(raw.get("params") or {})}
    out["train"] = {**base.train, **(raw.get("train") or {})}
    out["overrides"] = tuple(base.overrides) + tuple(raw.get("overrides") or ())
    out.setdefault("trains", base.trains)
    out.setdefault("uses_shots", base.uses_shots)
    out.setdefault("paper", base.paper)
    out.setdefault("code", base.code)
    out.setdefault("implementation", base.implementation)
    return out


def dataset_names() -> list[str]:
    return sorted(_index("datasets"))


def method_names() -> list[str]:
    return sorted(_index("methods"))


@functools.cache
def suites() -> dict[str, dict[str, Any]]:
    """All suites: name → {title, datasets, and optional backbone/pretrained/data_root/train/methods/input}."""
    merged: dict[str, dict[str, Any]] = {}
    for folder in reversed(card_dirs("datasets")):
        path = folder / "suites.yaml"
        if path.is_file():
            raw = load_yaml(path) or {}
            if not isinstance(raw, dict):
                raise BenchError(f"{path} must map suite names to suites")
            merged.update(raw)
    return merged


def suite(name: str) -> dict[str, Any]:
    all_suites = suites()
    if name not in all_suites:
        raise did_you_mean("suite", name, all_suites)
    return all_suites[name]


def suite_of(dataset: str) -> str | None:
    """The first suite that lists `dataset`, for display."""
    for name, spec in suites().items():
        if dataset in (spec.get("datasets") or []):
            return name
    return None


def clear_caches() -> None:
    """Forget loaded cards (tests that write cards call this)."""
    for fn in (_index, dataset_card, method_card, suites):
        fn.cache_clear()
