"""Read a dataset card's train/val/test items from the CoOp/Dassl layout (no torch).

Usage:
    >>> from bench.data.splits import read_splits
    >>> splits = read_splits(cards.dataset_card("oxford_pets"), Path("/data"))
    >>> len(splits.classnames), splits.train[0]
    (37, Item(path='/data/oxford_pets/images/...jpg', label=0, classname='abyssinian'))

One reader per card kind, chosen from a table. Every file list is sorted so few-shot draws are portable.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path
from typing import NamedTuple

from bench.cards import DatasetCard, is_relative_inside
from bench.errors import BenchError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class Item(NamedTuple):
    path: str          # absolute image path
    label: int
    classname: str     # after the card's fixes and `_` → space


class Splits(NamedTuple):
    train: list[Item]
    val: list[Item]
    test: list[Item]
    classnames: list[str]   # index = label


def dataset_dir(card: DatasetCard, data_root: Path) -> Path:
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise BenchError(f"data root {root} does not exist; pass --data-root DIR holding the dataset folders")
    folder = root / card.folder
    if not folder.is_dir():
        raise BenchError(f"dataset '{card.name}': folder {folder} is missing; expected {card.describe_split_source(root)}"
                         " (see the CoOp DATASETS.md for how to obtain it)")
    return folder


def clean_name(card: DatasetCard, raw: str) -> str:
    return card.classname_fixes.get(raw, raw).replace("_", " ")


def read_splits(card: DatasetCard, data_root: Path) -> Splits:
    """All items of the dataset; labels are 0..n-1 and `classnames[label]` names each."""
    folder = dataset_dir(card, data_root)
    splits = READERS[card.kind](card, folder)
    _check_classes(card, splits, folder.parent)
    return splits


def _check_classes(card: DatasetCard, splits: Splits, data_root: Path) -> None:
    if not splits.test:
        raise BenchError(f"dataset '{card.name}': no test images in {card.describe_split_source(data_root)}")
    seen = {it.label for it in splits.train}
    for label, name in enumerate(splits.classnames):
        if splits.train and label not in seen:
            raise BenchError(f"dataset '{card.name}': class '{name}' (label {label}) has no training images")


def _names_from_items(card: DatasetCard, items: list[Item], source: Path) -> list[str]:
    names: dict[int, str] = {}
    for it in items:
        names.setdefault(it.label, it.classname)
    n = len(names)
    if sorted(names) != list(range(n)):
        raise BenchError(f"split file {source}: labels must be 0..{n - 1}, found {sorted(names)[:5]}...")
    return [names[i] for i in range(n)]


def _read_split_json(card: DatasetCard, folder: Path) -> Splits:
    path = folder / (card.split_file or "")
    if not path.is_file():
        raise BenchError(f"dataset '{card.name}': split file {path} is missing (get {card.split_file} from the "
                         "CoOp DATASETS.md links and put it there)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BenchError(f"malformed split file {path}: {err.msg} at line {err.lineno}") from err
    except UnicodeDecodeError as err:
        raise BenchError(f"malformed split file {path}: not UTF-8 text") from err
    if not isinstance(raw, dict):
        raise BenchError(f"malformed split file {path}: expected an object with train/val/test")
    image_dir = folder / card.image_dir
    out = {}
    for split in ("train", "val", "test"):
        entries = raw.get(split)
        if not isinstance(entries, list):
            raise BenchError(f"malformed split file {path}: '{split}' must be a list of [path, label, classname]")
        items = []
        for i, entry in enumerate(entries):
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                    and isinstance(entry[1], int) and not isinstance(entry[1], bool) and isinstance(entry[2], str)):
                raise BenchError(f"malformed split file {path}: {split}[{i}] must be [path, label, classname], "
                                 f"got {json.dumps(entry)[:80]}")
            if not is_relative_inside(entry[0]):
                raise BenchError(f"split file {path}: {split}[{i}] path {entry[0]!r} leaves the image folder "
                                 "(absolute or '..')")
            if entry[2] in card.drop_classes:
                continue
            items.append(Item(str(image_dir / entry[0]), entry[1], clean_name(card, entry[2])))
        out[split] = items
    names = _names_from_items(card, out["train"] + out["val"] + out["test"], path)
    return Splits(out["train"], out["val"], out["test"], names)


def read_classnames_file(path: Path) -> dict[str, str]:
    """ImageNet's classnames.txt: '<wnid> <name with spaces>' per line, in label order."""
    if not path.is_file():
        raise BenchError(f"class-names file {path} is missing (CoOp's imagenet/classnames.txt)")
    names: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            if not name:
                raise BenchError(f"malformed class-names file {path}: line {i + 1} must be '<wnid> <name>'")
            names[wnid] = name
    return names


def _list_images(folder: Path) -> list[str]:
    """Image files, sorted; hidden files (macOS `._name.JPEG` resource forks, …) are skipped as Dassl's
    listdir_nohidden does."""
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_file() and not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTS)


def _class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise BenchError(f"image folder {folder} is missing")
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _read_imagenet(card: DatasetCard, folder: Path) -> Splits:
    names = read_classnames_file(folder / (card.classnames_file or "classnames.txt"))
    out = {}
    for split, sub in (("train", "train"), ("test", "val")):
        base = folder / card.image_dir / sub
        wnids = _class_folders(base)
        out[split] = [Item(str(base / w / f), label, clean_name(card, names.get(w, w)))
                      for label, w in enumerate(wnids) for f in _list_images(base / w)]
    classnames = [clean_name(card, names.get(w, w)) for w in _class_folders(folder / card.image_dir / "train")]
    return Splits(out["train"], [], out["test"], classnames)


def _read_imagenet_variant(card: DatasetCard, folder: Path) -> Splits:
    names = read_classnames_file(folder / (card.classnames_file or "classnames.txt"))
    base = folder / card.image_dir
    items: list[Item] = []
    if card.label_from == "folder_int":
        wnids = list(names)
        for label, wnid in enumerate(wnids):
            sub = base / str(label)
            items += [Item(str(sub / f), label, clean_name(card, names[wnid])) for f in _list_images(sub)]
        classnames = [clean_name(card, names[w]) for w in wnids]
    else:
        wnids = _class_folders(base)
        for label, wnid in enumerate(wnids):
            items += [Item(str(base / wnid / f), label, clean_name(card, names.get(wnid, wnid)))
                      for f in _list_images(base / wnid)]
        classnames = [clean_name(card, names.get(w, w)) for w in wnids]
    return Splits([], [], items, classnames)


def _read_fgvc(card: DatasetCard, folder: Path) -> Splits:
    variants_path = folder / (card.classnames_file or "variants.txt")
    if not variants_path.is_file():
        raise BenchError(f"dataset '{card.name}': {variants_path} is missing (fgvc-aircraft-2013b/data)")
    variants = [v.strip() for v in variants_path.read_text(encoding="utf-8").splitlines() if v.strip()]
    index = {v: i for i, v in enumerate(variants)}
    out = {}
    for split in ("train", "val", "test"):
        path = folder / f"images_variant_{split}.txt"
        if not path.is_file():
            raise BenchError(f"dataset '{card.name}': {path} is missing (fgvc-aircraft-2013b/data)")
        items = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            image, _, variant = line.strip().partition(" ")
            if not is_relative_inside(image):
                raise BenchError(f"malformed {path}: line {n + 1} image {image!r} leaves the image folder")
            if variant not in index:
                raise BenchError(f"malformed {path}: line {n + 1} names unknown variant {variant!r}")
            items.append(Item(str(folder / card.image_dir / f"{image}.jpg"), index[variant], clean_name(card, variant)))
        out[split] = items
    return Splits(out["train"], out["val"], out["test"], [clean_name(card, v) for v in variants])


def _seeded_split(card: DatasetCard, by_class: dict[str, list[str]]) -> dict[str, list[list]]:
    """Per-class random split with the card's ratios (seed 0), as CoOp's read_and_split_data does."""
    rng = random.Random(0)
    p_tr, p_val, _ = card.split_ratio
    out: dict[str, list[list]] = {"train": [], "val": [], "test": []}
    for label, raw in enumerate(sorted(by_class)):
        files = sorted(by_class[raw])
        rng.shuffle(files)
        n_tr = max(1, round(len(files) * p_tr))
        n_val = round(len(files) * p_val)
        for split, chunk in (("train", files[:n_tr]), ("val", files[n_tr:n_tr + n_val]),
                             ("test", files[n_tr + n_val:])):
            out[split] += [[f, label, raw] for f in chunk]
    return out


def _read_image_folder(card: DatasetCard, folder: Path) -> Splits:
    split_path = folder / (card.split_file or f"split_bench_{card.name}.json")
    if not split_path.is_file():
        image_dir = folder / card.image_dir
        by_class = {c: [f"{c}/{f}" for f in _list_images(image_dir / c)] for c in _class_folders(image_dir)}
        if not by_class:
            raise BenchError(f"dataset '{card.name}': no class sub-folders in {image_dir}")
        _write_json(split_path, _seeded_split(card, by_class))
    return _read_split_json(_with_split(card, split_path.name), folder)


def _read_csv(card: DatasetCard, folder: Path) -> Splits:
    path = folder / (card.csv_file or "data.csv")
    if not path.is_file():
        raise BenchError(f"dataset '{card.name}': CSV file {path} is missing (columns: path,label[,split])")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as err:
        raise BenchError(f"malformed CSV {path}: {str(err).splitlines()[0]}") from err
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise BenchError(f"malformed CSV {path}: needs a header with path,label[,split]")
    for n, r in enumerate(rows):
        if r.get("path") is None or r.get("label") is None:
            raise BenchError(f"malformed CSV {path}: row {n + 2} has fewer columns than the header")
        if not is_relative_inside(r["path"]):
            raise BenchError(f"CSV {path}: row {n + 2} path {r['path']!r} leaves the image folder (absolute or '..')")
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    if "split" in rows[0]:
        out: dict[str, list[list]] = {"train": [], "val": [], "test": []}
        for n, r in enumerate(rows):
            if r["split"] not in out:
                raise BenchError(f"malformed CSV {path}: row {n + 2} has split {r['split']!r} (train/val/test)")
            out[r["split"]].append([r["path"], index[r["label"]], r["label"]])
    else:
        by_class: dict[str, list[str]] = {}
        for r in rows:
            by_class.setdefault(r["label"], []).append(r["path"])
        out = _seeded_split(card, by_class)
    image_dir = folder / card.image_dir
    splits = {k: [Item(str(image_dir / p), lab, clean_name(card, raw)) for p, lab, raw in v] for k, v in out.items()}
    return Splits(splits["train"], splits["val"], splits["test"], [clean_name(card, c) for c in classes])


def _with_split(card: DatasetCard, split_file: str) -> DatasetCard:
    from dataclasses import replace

    return replace(card, split_file=split_file)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=4), encoding="utf-8")
    os.replace(tmp, path)


READERS = {
    "split_json": _read_split_json,
    "imagenet": _read_imagenet,
    "imagenet_variant": _read_imagenet_variant,
    "fgvc": _read_fgvc,
    "image_folder": _read_image_folder,
    "csv": _read_csv,
}
