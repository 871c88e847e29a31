"""The mini downstream suite: small CoOp/Dassl-layout datasets with a distribution shift from pretraining.

Usage:
    >>> from pathlib import Path
    >>> from bench.mini.suite import write_suite, SPECS
    >>> names = write_suite(Path("/tmp/mini-data"), seed=0, progress=print)
    >>> names[:2]
    ['mini_shapes', 'mini_colors']

On disk, per dataset (`folder` = the name): `<root>/<folder>/images/<class>/<class>_<nnnn>.png` (32 x 32 RGB,
written by `render.png_bytes`, so the bytes depend on the pixels only)
and `<root>/<folder>/<split_file>` = {"train": [[rel_path, label, classname], ...], "val": [...], "test": [...]}
with paths relative to `images/`, labels = index of the class folder in sorted order, json indent 4. The card
of each dataset is `datasets/<name>.yaml` (see `card_text`). Shifts from the pretraining corpus:
  mini_shapes    9 shapes with any colour/fill on patches of real photographs, pixel noise
  mini_colors    11 colours of shaded (lit) shapes on grey photo backgrounds, noise
  mini_textures  7 patterns in low-contrast and unseen colour pairs, any angle and scale, noise
  mini_digits    10 held-out scikit-learn digits, thick dark strokes on pale patterned paper (a new style)
  mini_combos    12 colour+shape pairs, 3 of them never seen in pretraining (corpus.HELD_OUT)
  mini_sketches  8 shapes as wobbly double-stroke ink outlines on grainy paper (a new rendering style)
Prompts shift too: three templates frame the class name as pretraining never captioned it ("a {} thing.",
"a {} on a photo."), as real prompts rarely match web captions; zero-shot pays for it, fine-tuning can repair it.
Contents are large and centred so that random resized crops keep the class visible; nothing depends on
left/right, so horizontal flips keep every label (digits are mirrored, as in any flip-augmented benchmark).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.mini import render as R
from bench.mini.corpus import SUITE_DIGITS_PER_CLASS

Render = Callable[[np.random.Generator, str, int], np.ndarray]


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    template: str
    classes: tuple[str, ...]        # raw class folder names (CoOp: `_` becomes a space)
    render: Render                  # (rng, class name, index within class) -> 32 x 32 x 3 uint8 image

    @property
    def split_file(self) -> str:
        return f"split_zhou_{self.title}.json"


def _photo_bg(rng, gray: bool = False, dim: float = 1.0) -> np.ndarray:
    bg = R.photo_patch(rng)
    if gray:
        bg = np.repeat(((bg[..., 0] + bg[..., 1] + bg[..., 2]) / 3)[..., None], 3, axis=2)
    return bg * dim


def _shapes(rng, cls, _i):
    color = str(rng.choice(list(R.COLORS)))
    mask = R.shape_mask(cls, rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.62, 0.82), rng.normal(0, 0.15))
    fg = R.jitter(color, rng)
    fill = str(rng.choice(["plain", "plain", "striped", "dotted", "checkered"]))
    if fill != "plain":
        fg = R.two_tone(R.pattern_mask(fill, rng, freq=rng.uniform(4, 6)), fg, R.jitter(str(rng.choice(list(R.COLORS))), rng))
    return R.finish(R.paint(_photo_bg(rng), mask, fg if fg.ndim == 3 else R.solid(fg)), noise=10, rng=rng)


def _colors(rng, cls, _i):
    shape = str(rng.choice(R.SHAPES))
    mask = R.shape_mask(shape, rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.7, 0.9), rng.normal(0, 0.2))
    a = rng.uniform(0, 2 * math.pi)
    ramp = 1 + rng.uniform(0.15, 0.35) * (R._X * R.cos(a) + R._Y * R.sin(a))[..., None]   # lit from one side
    fg = np.clip(R.solid(R.jitter(cls, rng, 18)) * ramp, 0, 255)
    return R.finish(R.paint(_photo_bg(rng, gray=True, dim=rng.uniform(0.6, 1.1)), mask, fg), noise=14, rng=rng)


def _textures(rng, cls, _i):
    c1 = str(rng.choice(list(R.COLORS)))
    if rng.random() < 0.5:       # low contrast: the same colour, lighter or darker
        rgb1 = R.jitter(c1, rng)
        rgb2 = np.clip(rgb1 * rng.choice([0.55, 1.45]), 0, 255)
    else:
        rgb1, rgb2 = R.jitter(c1, rng), R.jitter(str(rng.choice([c for c in R.COLORS if c != c1])), rng)
    m = R.pattern_mask(cls, rng, freq=rng.uniform(2.0, 6.0), angle=rng.uniform(0, math.pi))
    return R.finish(R.two_tone(m, rgb1, rgb2), noise=12, rng=rng)


_DIGIT_POOL: dict[int, list[int]] = {}


def _digits(rng, cls, i):
    if not _DIGIT_POOL:
        for idx in R.digit_pool("suite", SUITE_DIGITS_PER_CLASS):
            _DIGIT_POOL.setdefault(R.digit_label(idx), []).append(idx)
    pool = _DIGIT_POOL[R.DIGITS.index(cls)]
    index = pool[i % len(pool)]
    paper = R.solid(np.clip(np.array([235, 228, 205]) + rng.normal(0, 10, 3), 0, 255))
    faint = R.pattern_mask(str(rng.choice(["striped", "grid", "dotted"])), rng, freq=rng.uniform(5, 8))
    paper = R.paint(paper, faint * 0.2, R.solid(R.jitter(str(rng.choice(["blue", "red", "gray"])), rng)))
    ink = R.jitter(str(rng.choice(["black", "blue", "brown", "purple"])), rng)
    return R.finish(R.paint(paper, R.digit_mask(index, rng, scale=0.85, thick=3), R.solid(ink)), noise=8, rng=rng)


def _combos(rng, cls, _i):
    color, shape = cls.split("_")
    bg = str(rng.choice([c for c in R.COLORS if c not in ("red", "blue", "green", "yellow")]))
    mask = R.shape_mask(shape, rng.uniform(-0.15, 0.15), rng.uniform(-0.15, 0.15), rng.uniform(0.5, 0.75), rng.normal(0, 0.2))
    return R.finish(R.paint(R.solid(R.jitter(bg, rng, 25)), mask, R.solid(R.jitter(color, rng, 25))), noise=10, rng=rng)


def _sketches(rng, cls, _i):
    paper = R.solid(np.clip(np.array([238, 235, 225]) + rng.normal(0, 8, 3), 0, 255))
    paper = paper + rng.normal(0, 12, (R.S, R.S, 1))          # grain
    ink = R.solid(R.jitter(str(rng.choice(["black", "blue", "gray"])), rng))
    cx, cy, r, rot = rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.62, 0.82), rng.normal(0, 0.2)
    for _ in range(2):                                        # two sloppy strokes
        m = R.shape_mask(cls, cx + rng.normal(0, 0.03), cy + rng.normal(0, 0.03), r * rng.uniform(0.95, 1.05), rot,
                         wobble=0.02, rng=rng)
        paper = R.paint(paper, R.outline(m, 3) * rng.uniform(0.7, 1.0), ink)
    return R.finish(paper, noise=6, rng=rng)


COMBO_CLASSES = tuple(f"{c}_{s}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "triangle"))
SPECS: tuple[Spec, ...] = (
    Spec("mini_shapes", "MiniShapes", "a {} on a photo.", R.SHAPES, _shapes),
    Spec("mini_colors", "MiniColors", "a {} thing.", tuple(R.COLORS), _colors),
    Spec("mini_textures", "MiniTextures", "{} texture.", R.PATTERNS, _textures),
    Spec("mini_digits", "MiniDigits", "a photo of the number {}.", R.DIGITS, _digits),
    Spec("mini_combos", "MiniCombos", "a {} thing.", COMBO_CLASSES, _combos),
    Spec("mini_sketches", "MiniSketches", "a sketch of a {}.", R.SHAPES[:8], _sketches),
)
NAMES = tuple(s.name for s in SPECS)


def spec(name: str) -> Spec:
    return {s.name: s for s in SPECS}[name]


def card_text(s: Spec) -> str:
    """The dataset card (`datasets/<name>.yaml`) of a mini dataset."""
    return (f"# The mini world's {s.title}: generated by bench/mini/suite.py ({len(s.classes)} classes).\n"
            f"name: {s.name}\ntitle: {s.title}\nversion: 1\nkind: split_json\nfolder: {s.name}\nimage_dir: images\n"
            f"split_file: {s.split_file}\ntemplate: \"{s.template}\"\n")


def write_dataset(s: Spec, data_root: Path, seed: int = 0, n_train: int = 24, n_val: int = 5, n_test: int = 30
                  ) -> Path:
    """Render and write one dataset (images + split JSON); returns its folder."""
    folder = Path(data_root) / s.name
    images = folder / "images"
    rng = np.random.default_rng([seed, 303, NAMES.index(s.name)])
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    classes = sorted(s.classes)
    for label, cls in enumerate(classes):
        (images / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_train + n_val + n_test):
            rel = f"{cls}/{cls}_{i:04d}.png"
            (images / rel).write_bytes(R.png_bytes(s.render(rng, cls, i)))
            part = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            split[part].append([rel, label, cls])
    (folder / s.split_file).write_text(json.dumps(split, indent=4) + "\n", encoding="utf-8")
    return folder


def write_suite(data_root: Path, seed: int = 0, n_train: int = 24, n_val: int = 5, n_test: int = 30,
                names: tuple[str, ...] | None = None, progress: Callable[[str], None] | None = None) -> list[str]:
    """Write every mini dataset (or `names`) under `data_root`; returns the dataset names."""
    out = []
    for s in SPECS:
        if names is not None and s.name not in names:
            continue
        write_dataset(s, data_root, seed, n_train, n_val, n_test)
        if progress:
            progress(f"wrote {s.name}: {len(s.classes)} classes x {n_train}/{n_val}/{n_test} train/val/test images")
        out.append(s.name)
    return out
