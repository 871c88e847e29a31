"""Drawing primitives of the mini world: shapes, colours, patterns, digits and photo patches (numpy + PIL).

Usage:
    >>> import numpy as np
    >>> from bench.mini import render as R
    >>> rng = np.random.default_rng(0)
    >>> bg = R.solid(R.jitter("blue", rng))
    >>> m = R.shape_mask("star", 0.0, 0.0, 0.8, 0.1)
    >>> img = R.finish(R.paint(bg, m, R.solid(R.jitter("red", rng))))   # PIL RGB image, 32 x 32

Everything is drawn at S = 64 px on a [-1, 1]^2 grid (y points down) and box-downsampled to 32 px, which
anti-aliases the edges. All randomness comes from the numpy Generator the caller passes in.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

S = 64          # drawing resolution
OUT = 32        # stored image size

COLORS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (40, 70, 220), "yellow": (240, 220, 40),
    "orange": (245, 140, 20), "purple": (130, 50, 180), "pink": (245, 130, 190), "brown": (125, 75, 35),
    "black": (20, 20, 20), "white": (240, 240, 240), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "hexagon", "moon")
PLURAL = {"cross": "crosses"}
PATTERNS = ("striped", "dotted", "checkered", "grid", "wavy", "zigzag", "speckled")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_Y, _X = np.mgrid[0:S, 0:S].astype(np.float32)
_X = (_X + 0.5) / S * 2 - 1
_Y = (_Y + 0.5) / S * 2 - 1


def plural(noun: str) -> str:
    return PLURAL.get(noun, noun + "s")


def jitter(color: str, rng: np.random.Generator, amount: float = 12.0) -> np.ndarray:
    """The named colour with a little per-channel noise, as float RGB in [0, 255]."""
    return np.clip(np.array(COLORS[color], np.float32) + rng.normal(0, amount, 3), 0, 255).astype(np.float32)


def solid(rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32), (S, S, 3)).copy()


def two_tone(mask: np.ndarray, rgb1, rgb2) -> np.ndarray:
    m = mask[..., None]
    return m * np.asarray(rgb1, np.float32) + (1 - m) * np.asarray(rgb2, np.float32)


def paint(base: np.ndarray, mask: np.ndarray, fill: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return base * (1 - m) + fill * m


def _polygon(points: list[tuple[float, float]]) -> np.ndarray:
    im = Image.new("L", (S, S), 0)
    ImageDraw.Draw(im).polygon([((x + 1) / 2 * S, (y + 1) / 2 * S) for x, y in points], fill=255)
    return np.asarray(im, np.float32) / 255.0


def _shape_points(shape: str, n: int = 48) -> list[tuple[float, float]]:
    """Unit-size outline (radius about 1, y down) of a polygonal shape."""
    if shape == "square":
        return [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]
    if shape == "triangle":
        return [(0.0, -1.0), (0.95, 0.7), (-0.95, 0.7)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)]
    if shape == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    if shape == "star":
        return [((1.0 if i % 2 == 0 else 0.42) * math.sin(i * math.pi / 5),
                 -(1.0 if i % 2 == 0 else 0.42) * math.cos(i * math.pi / 5)) for i in range(10)]
    if shape == "cross":
        a, b = 0.3, 0.95
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    if shape == "heart":
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        x, y = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return list(zip(x / 16.5, -(y + 2.5) / 15.0))
    raise KeyError(shape)


def shape_mask(shape: str, cx: float, cy: float, r: float, rot: float = 0.0, wobble: float = 0.0,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Binary mask (S x S floats) of `shape` centred at (cx, cy) with radius r (grid units), rotated by rot rad."""
    if shape in ("circle", "moon"):
        pts = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 40, endpoint=False)]
    else:
        pts = _shape_points(shape)
    if wobble and rng is not None:      # resample the outline densely and shake it: a hand-drawn look
        dense = []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
            for t in np.linspace(0, 1, 4, endpoint=False):
                dense.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
        noise = np.cumsum(rng.normal(0, wobble, (len(dense), 2)), axis=0)
        noise -= np.linspace(0, 1, len(dense))[:, None] * noise[-1]        # close the loop
        pts = [(x + dx, y + dy) for (x, y), (dx, dy) in zip(dense, noise)]
    c, s = math.cos(rot), math.sin(rot)
    place = lambda p: [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in p]  # noqa: E731
    mask = _polygon(place(pts))
    if shape == "moon":     # a disc minus a shifted disc
        bite = [(x + 0.55, y - 0.25) for x, y in pts]
        mask = np.clip(mask - _polygon(place(bite)), 0, 1)
    return mask


def outline(mask: np.ndarray, width: int = 5) -> np.ndarray:
    """The rim of a binary mask, `width` drawing pixels thick (odd)."""
    im = Image.fromarray((mask * 255).astype(np.uint8))
    inner = np.asarray(im.filter(ImageFilter.MinFilter(width)), np.float32) / 255.0
    return np.clip(mask - inner, 0, 1)


def dilate(mask: np.ndarray, width: int = 3) -> np.ndarray:
    im = Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8))
    return np.asarray(im.filter(ImageFilter.MaxFilter(width)), np.float32) / 255.0


def pattern_mask(pattern: str, rng: np.random.Generator, freq: float | None = None, angle: float | None = None,
                 ) -> np.ndarray:
    """A two-tone texture (S x S floats in {0, 1}); freq = cycles across the image, angle in radians."""
    f = freq if freq is not None else rng.uniform(2.5, 4.5)
    a = angle if angle is not None else rng.choice([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4]) + rng.normal(0, 0.08)
    ph, ph2 = rng.uniform(0, 1, 2)
    u = (_X * math.cos(a) + _Y * math.sin(a)) / 2
    v = (-_X * math.sin(a) + _Y * math.cos(a)) / 2
    if pattern == "striped":
        m = np.sin(2 * math.pi * (f * u + ph)) > 0
    elif pattern == "dotted":
        du, dv = (f * u + ph) % 1 - 0.5, (f * v + ph2) % 1 - 0.5
        m = du ** 2 + dv ** 2 < 0.27 ** 2
    elif pattern == "checkered":
        m = (np.floor(f * u + ph) + np.floor(f * v + ph2)) % 2 == 0
    elif pattern == "grid":
        m = ((f * u + ph) % 1 < 0.25) | ((f * v + ph2) % 1 < 0.25)
    elif pattern == "wavy":
        m = np.sin(2 * math.pi * (f * u + 0.12 * np.sin(2 * math.pi * 1.5 * v * 2) + ph)) > 0
    elif pattern == "zigzag":
        tri = np.abs(((f * 1.2 * v + ph2) % 1) - 0.5)
        m = ((f * u + 0.8 * tri + ph) % 1) < 0.5
    elif pattern == "speckled":
        small = rng.random((S // 4, S // 4)) < 0.3
        m = np.kron(small, np.ones((4, 4))) > 0
    elif pattern in ("plain", "solid"):
        m = np.ones((S, S), bool)
    else:
        raise KeyError(pattern)
    return m.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def digit_pool(part: str, per_class_suite: int) -> list[int]:
    """Indices of scikit-learn digits: the last `per_class_suite` of each class go to the suite, the rest to the
    corpus (part = "corpus" or "suite"), so pretraining never sees a suite image."""
    _, y = _digits()
    out = []
    for k in range(10):
        idx = np.flatnonzero(y == k)
        out.extend((idx[:-per_class_suite] if part == "corpus" else idx[-per_class_suite:]).tolist())
    return sorted(out)


def digit_label(index: int) -> int:
    return int(_digits()[1][index])


def digit_mask(index: int, rng: np.random.Generator, scale: float = 0.8, thick: int = 1) -> np.ndarray:
    """The 8x8 scikit-learn digit `index`, upscaled smoothly to a soft mask placed near the centre."""
    img = Image.fromarray((_digits()[0][index] * 255).astype(np.uint8))
    side = int(S * scale * rng.uniform(0.9, 1.05))
    big = np.asarray(img.resize((side, side), Image.BICUBIC), np.float32) / 255.0
    out = np.zeros((S, S), np.float32)
    ox, oy = (S - side) // 2 + rng.integers(-3, 4, 2)
    ox, oy = int(np.clip(ox, 0, S - side)), int(np.clip(oy, 0, S - side))
    out[oy:oy + side, ox:ox + side] = big
    mask = np.clip((out - 0.35) * 3.0, 0, 1)
    return dilate(mask, thick) if thick > 1 else mask


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return tuple(np.asarray(Image.open(folder / n).convert("RGB"), np.float32) for n in ("china.jpg", "flower.jpg"))


def photo_patch(rng: np.random.Generator) -> np.ndarray:
    """A random square crop of one of scikit-learn's two bundled photographs, resized to S x S."""
    photo = _photos()[int(rng.integers(0, 2))]
    h, w, _ = photo.shape
    side = int(rng.integers(48, min(h, w) // 2))
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    crop = Image.fromarray(photo[y:y + side, x:x + side].astype(np.uint8)).resize((S, S), Image.BILINEAR)
    return np.asarray(crop, np.float32)


def finish(arr: np.ndarray, noise: float = 0.0, rng: np.random.Generator | None = None) -> Image.Image:
    """Box-downsample an S x S float image to OUT x OUT uint8 RGB, optionally adding Gaussian pixel noise."""
    small = arr.reshape(OUT, S // OUT, OUT, S // OUT, 3).mean(axis=(1, 3))
    if noise and rng is not None:
        small = small + rng.normal(0, noise, small.shape)
    return Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8), "RGB")
