"""Generated CoOp-layout datasets for checks and benchmarks: JPEG photos of coloured shapes on textured
backgrounds, a split_zhou-style JSON and a dataset card (no network, deterministic).

Usage:
    >>> from bench.data.synthetic import make_dataset
    >>> make_dataset(data_root, cards_root, "synth100", n_classes=100, shots=(16, 4, 25), size=(375, 500))
    $ BENCH_CARDS_PATH=cards_root bench run --datasets synth100 --data-root data_root ...

Images are realistic in what costs time on a real node (JPEG size and decoding, full-resolution resize and
crop), not in what they show: class c is a shape of a class-specific colour and form at a random place.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def synthetic_image(label: int, index: int, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """(height, width) RGB image: a noisy two-colour gradient with an ellipse or polygon of the class's colour."""
    h, w = size
    rng = np.random.default_rng([seed, label, index])
    hue = np.random.default_rng([seed, label]).integers(30, 226, size=3)
    top, bottom = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    base = (1 - t) * top + t * bottom + rng.normal(0, 12, size=(h, w, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = int(min(h, w) * rng.uniform(0.2, 0.35))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    colour = tuple(int(c) for c in np.clip(hue + rng.integers(-15, 16, size=3), 0, 255))
    if label % 2:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        k = 3 + (label // 2) % 4
        angles = np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.uniform(0, np.pi)
        draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles], fill=colour)
    return img


def make_dataset(data_root: Path, cards_root: Path, name: str, n_classes: int, shots: tuple[int, int, int],
                 size: tuple[int, int] = (375, 500), quality: int = 90, template: str = "a photo of a {}.",
                 workers: int = 8) -> Path:
    """Write `<data_root>/<name>/images/<class>/*.jpg`, its `split_zhou_<name>.json` and a card
    `<cards_root>/datasets/<name>.yaml`; `shots` = (train, val, test) images per class. Returns the folder."""
    folder = Path(data_root) / name
    n_train, n_val, n_test = shots
    jobs, split = [], {"train": [], "val": [], "test": []}
    for label in range(n_classes):
        classname = f"class_{label:03d}"
        (folder / "images" / classname).mkdir(parents=True, exist_ok=True)
        index = 0
        for part, n in (("train", n_train), ("val", n_val), ("test", n_test)):
            for _ in range(n):
                rel = f"{classname}/{classname}_{index:04d}.jpg"
                split[part].append([rel, label, classname])
                jobs.append((folder / "images" / rel, label, index))
                index += 1

    def write(job) -> None:
        path, label, index = job
        if not path.is_file():
            synthetic_image(label, index, size).save(path, quality=quality)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, jobs))
    (folder / f"split_zhou_{name}.json").write_text(json.dumps(split, indent=4))
    card_dir = Path(cards_root) / "datasets"
    card_dir.mkdir(parents=True, exist_ok=True)
    (card_dir / f"{name}.yaml").write_text(
        f"name: {name}\ntitle: {name}\nversion: 1\nkind: split_json\nfolder: {name}\nimage_dir: images\n"
        f"split_file: split_zhou_{name}.json\ntemplate: {json.dumps(template)}\n")
    return folder
