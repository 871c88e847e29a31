"""Tiny generated CoOp-layout data for tests: coloured-shape PNGs, split_zhou-style JSON, and dataset cards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 60, 220), (230, 200, 20), (200, 30, 200), (20, 200, 200),
           (250, 130, 10), (120, 120, 120)]


def make_image(label: int, index: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(label * 1000 + index)
    arr = np.full((size, size, 3), 235, dtype=np.uint8)
    c = np.array(COLOURS[label % len(COLOURS)], dtype=np.int16)
    x0, y0 = rng.integers(0, size // 3, size=2)
    arr[y0:y0 + size // 2, x0:x0 + size // 2] = np.clip(c + rng.integers(-20, 20, size=3), 0, 255)
    return Image.fromarray(arr)


def make_split_dataset(root: Path, folder: str, classnames: list[str], n_train: int = 6, n_val: int = 2,
                       n_test: int = 4, split_file: str = "split_toy.json") -> Path:
    base = root / folder
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classnames):
        (base / "images" / name).mkdir(parents=True, exist_ok=True)
        i = 0
        for part, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            for _ in range(n):
                rel = f"{name}/{name}_{i:03d}.png"
                make_image(label, i).save(base / "images" / rel)
                split[part].append([rel, label, name])
                i += 1
    (base / split_file).write_text(json.dumps(split, indent=4))
    return base


def write_card(cards_root: Path, name: str, folder: str, template: str = "a photo of a {}.",
               split_file: str = "split_toy.json", **extra) -> Path:
    folder_path = cards_root / "datasets"
    folder_path.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}", f"title: {name.title()}", "version: 1", "kind: split_json", f"folder: {folder}",
             "image_dir: images", f"split_file: {split_file}", f'template: "{template}"']
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    path = folder_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


TOY_CLASSES = ["red_square", "green_square", "blue_square", "yellow_square", "purple_square"]
TOY2_CLASSES = ["cyan_square", "orange_square", "grey_square"]


def make_toy_world(tmp: Path) -> tuple[Path, Path]:
    """(data_root, cards_root) with datasets toy (5 classes) and toy2 (3 classes); suite 'toy'."""
    data, cards_root = tmp / "data", tmp / "cards"
    make_split_dataset(data, "toy", TOY_CLASSES)
    make_split_dataset(data, "toy2", TOY2_CLASSES)
    write_card(cards_root, "toy", "toy")
    write_card(cards_root, "toy2", "toy2")
    (cards_root / "datasets" / "suites.yaml").write_text(
        "toy:\n  title: toy\n  datasets: [toy, toy2]\n  backbone: bench-tiny\n  pretrained: none\n")
    return data, cards_root


IMAGENET_WNIDS = {"n01000001": "red_square", "n01000002": "green_square", "n01000003": "blue_square",
                  "n01000004": "yellow_square"}


def make_imagenet_like(data: Path, per_class_train: int = 6, per_class_test: int = 3) -> None:
    """A 4-class ImageNet in CoOp's layout plus V2 / Sketch / A / R trees (A and R: a 3-class subset)."""
    names = "\n".join(f"{w} {n.replace('_', ' ')}" for w, n in IMAGENET_WNIDS.items()) + "\n"
    wnids = list(IMAGENET_WNIDS)
    base = data / "imagenet"
    for split, n in (("train", per_class_train), ("val", per_class_test)):
        for label, w in enumerate(wnids):
            (base / "images" / split / w).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                make_image(label, i + (100 if split == "val" else 0)).save(base / "images" / split / w / f"{w}_{i}.JPEG",
                                                                            format="PNG")
    (base / "classnames.txt").write_text(names)
    variants = {"imagenetv2": ("imagenetv2-matched-frequency-format-val", wnids, True),
                "imagenet-sketch": ("images", wnids, False),
                "imagenet-adversarial": ("imagenet-a", wnids[1:], False),
                "imagenet-rendition": ("imagenet-r", wnids[:3], False)}
    for folder, (sub, keep, by_int) in variants.items():
        for w in keep:
            label = wnids.index(w)
            target = data / folder / sub / (str(label) if by_int else w)
            target.mkdir(parents=True, exist_ok=True)
            for i in range(2):
                make_image(label, 200 + i).save(target / f"{i}.jpg", format="PNG")
        (data / folder / "classnames.txt").write_text(names)
