"""Drawing primitives of the mini world: shapes, colours, patterns, digits and photo patches, in numpy only.

Usage:
    >>> import numpy as np
    >>> from bench.mini import render as R
    >>> rng = np.random.default_rng(0)
    >>> bg = R.solid(R.jitter("blue", rng))
    >>> m = R.shape_mask("star", 0.0, 0.0, 0.8, 0.1)
    >>> img = R.finish(R.paint(bg, m, R.solid(R.jitter("red", rng))))   # uint8 array, 32 x 32 x 3
    >>> png = R.png_bytes(img)                                          # the file bench writes

Everything is drawn at S = 64 px on a [-1, 1]^2 grid (y points down) and box-downsampled to 32 px, which
anti-aliases the edges. All randomness comes from the numpy Generator the caller passes in.

Bit-identical on every machine and library version (world v4): the pixels come only from float64 +, -, *, /,
floor, comparisons and integer counts, which IEEE 754 fixes exactly, in a fixed order. So bench draws polygons
(pixel-centre winding numbers), rank filters, resampling (PIL-style separable kernels, summed tap by tap), sine
(a polynomial) and PNG files (stored deflate blocks) itself: PIL's polygon fill changed between Pillow 10 and 11,
numpy's float32/float64 promotion changed in numpy 2 (NEP 50), and numpy's SIMD sin/sum and zlib's compressor
may differ by CPU or build. The two inputs bench does not make, scikit-learn's digits and the JPEG decode of its
two photographs, are hashed into the world manifest (`inputs_sha256`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
import zlib
from pathlib import Path

import numpy as np

S = 64          # drawing resolution
OUT = 32        # stored image size
F = np.float64

COLORS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (40, 70, 220), "yellow": (240, 220, 40),
    "orange": (245, 140, 20), "purple": (130, 50, 180), "pink": (245, 130, 190), "brown": (125, 75, 35),
    "black": (20, 20, 20), "white": (240, 240, 240), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "hexagon", "moon")
PLURAL = {"cross": "crosses"}
PATTERNS = ("striped", "dotted", "checkered", "grid", "wavy", "zigzag", "speckled")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_Y, _X = np.mgrid[0:S, 0:S].astype(F)
_X = (_X + 0.5) / S * 2 - 1
_Y = (_Y + 0.5) / S * 2 - 1

TAU = 2 * math.pi
_SIN_COEFS = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(9, -1, -1))   # z^19 .. z^1


def sin(x):
    """sin in float64 from +, *, floor only (|error| < 1e-15): the same bits everywhere, unlike libm or SIMD."""
    t = np.asarray(x, F) / TAU
    r = t - np.floor(t + 0.5)                                   # turns, in [-0.5, 0.5)
    r = np.where(r > 0.25, 0.5 - r, np.where(r < -0.25, -0.5 - r, r))
    z = r * TAU                                                 # [-pi/2, pi/2]
    z2 = z * z
    p = np.zeros_like(z)
    for c in _SIN_COEFS:
        p = p * z2 + c
    return p * z


def cos(x):
    return sin(np.asarray(x, F) + TAU / 4)


def plural(noun: str) -> str:
    return PLURAL.get(noun, noun + "s")


def jitter(color: str, rng: np.random.Generator, amount: float = 12.0) -> np.ndarray:
    """The named colour with a little per-channel noise, as float RGB in [0, 255]."""
    return np.clip(np.array(COLORS[color], F) + rng.normal(0, amount, 3), 0, 255)


def solid(rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, F), (S, S, 3)).copy()


def two_tone(mask: np.ndarray, rgb1, rgb2) -> np.ndarray:
    m = np.asarray(mask, F)[..., None]
    return m * np.asarray(rgb1, F) + (1 - m) * np.asarray(rgb2, F)


def paint(base: np.ndarray, mask: np.ndarray, fill: np.ndarray) -> np.ndarray:
    m = np.asarray(mask, F)[..., None]
    return np.asarray(base, F) * (1 - m) + np.asarray(fill, F) * m


def fill_polygon(points) -> np.ndarray:
    """S x S mask (0/1) of the pixels whose centres have a non-zero winding number (points in grid units)."""
    p = (np.asarray(points, F) + 1) / 2 * S
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    yc = np.arange(S, dtype=F)[:, None] + 0.5
    up, down = (y0 <= yc) & (yc < y1), (y1 <= yc) & (yc < y0)          # half-open: a vertex counts once
    cross = up | down
    row, edge = np.nonzero(cross)
    yr = yc[row, 0]
    xi = x0[edge] + (yr - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    first = np.clip(np.floor(xi - 0.5) + 1, 0, S).astype(np.int64)   # first pixel whose centre is right of xi
    wind = np.where(up[row, edge], 1, -1)
    acc = np.zeros((S, S + 1), np.int64)
    np.add.at(acc, (row, first), wind)
    return (np.cumsum(acc[:, :S], axis=1) != 0).astype(F)


def _shape_points(shape: str, n: int = 48) -> list[tuple[float, float]]:
    """Unit-size outline (radius about 1, y down) of a polygonal shape."""
    if shape == "square":
        return [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]
    if shape == "triangle":
        return [(0.0, -1.0), (0.95, 0.7), (-0.95, 0.7)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)]
    if shape == "hexagon":
        a = np.arange(6) * (math.pi / 3)
        return list(zip(cos(a).tolist(), sin(a).tolist()))
    if shape == "star":
        a, rad = np.arange(10) * (math.pi / 5), np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return list(zip((rad * sin(a)).tolist(), (-rad * cos(a)).tolist()))
    if shape == "cross":
        a, b = 0.3, 0.95
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    if shape == "heart":
        t = np.arange(n) * (TAU / n)
        x = 16 * sin(t) ** 3
        y = 13 * cos(t) - 5 * cos(2 * t) - 2 * cos(3 * t) - cos(4 * t)
        return list(zip((x / 16.5).tolist(), (-(y + 2.5) / 15.0).tolist()))
    raise KeyError(shape)


def shape_mask(shape: str, cx: float, cy: float, r: float, rot: float = 0.0, wobble: float = 0.0,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """Binary mask (S x S floats) of `shape` centred at (cx, cy) with radius r (grid units), rotated by rot rad."""
    if shape in ("circle", "moon"):
        a = np.arange(40) * (TAU / 40)
        pts = np.stack([cos(a), sin(a)], axis=1)
    else:
        pts = np.asarray(_shape_points(shape), F)
    if wobble and rng is not None:      # resample the outline densely and shake it: a hand-drawn look
        nxt = np.roll(pts, -1, axis=0)
        t = (np.arange(4, dtype=F) / 4)[None, :, None]
        dense = (pts[:, None] + t * (nxt - pts)[:, None]).reshape(-1, 2)
        noise = np.cumsum(rng.normal(0, wobble, (len(dense), 2)), axis=0)
        noise -= (np.arange(len(dense), dtype=F) / (len(dense) - 1))[:, None] * noise[-1]     # close the loop
        pts = dense + noise
    c, s = float(cos(rot)), float(sin(rot))
    place = lambda p: np.stack([cx + r * (p[:, 0] * c - p[:, 1] * s), cy + r * (p[:, 0] * s + p[:, 1] * c)], 1)  # noqa: E731
    mask = fill_polygon(place(pts))
    if shape == "moon":     # a disc minus a shifted disc
        mask = np.clip(mask - fill_polygon(place(pts + np.array([0.55, -0.25]))), 0, 1)
    return mask


def _rank(mask: np.ndarray, width: int, fn) -> np.ndarray:
    """Min or max over a width x width window (edges replicated), separably."""
    r = width // 2
    p = np.pad(np.asarray(mask, F), r, mode="edge")
    rows = functools.reduce(fn, [p[i:i + S] for i in range(width)])
    return functools.reduce(fn, [rows[:, i:i + S] for i in range(width)])


def outline(mask: np.ndarray, width: int = 5) -> np.ndarray:
    """The rim of a binary mask, `width` drawing pixels thick (odd)."""
    return np.clip(mask - _rank(mask, width, np.minimum), 0, 1)


def dilate(mask: np.ndarray, width: int = 3) -> np.ndarray:
    return _rank(np.clip(mask, 0, 1), width, np.maximum)


def pattern_mask(pattern: str, rng: np.random.Generator, freq: float | None = None, angle: float | None = None,
                 ) -> np.ndarray:
    """A two-tone texture (S x S floats in {0, 1}); freq = cycles across the image, angle in radians."""
    f = float(freq if freq is not None else rng.uniform(2.5, 4.5))
    a = float(angle if angle is not None else rng.choice([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4])
              + rng.normal(0, 0.08))
    ph, ph2 = (float(v) for v in rng.uniform(0, 1, 2))
    ca, sa = float(cos(a)), float(sin(a))
    u = (_X * ca + _Y * sa) / 2
    v = (-_X * sa + _Y * ca) / 2
    frac = lambda t: t - np.floor(t)  # noqa: E731
    if pattern == "striped":            # sin(2 pi t) > 0, exactly
        t = frac(f * u + ph)
        m = (t > 0) & (t < 0.5)
    elif pattern == "dotted":
        du, dv = frac(f * u + ph) - 0.5, frac(f * v + ph2) - 0.5
        m = du * du + dv * dv < 0.27 ** 2
    elif pattern == "checkered":
        m = (np.floor(f * u + ph) + np.floor(f * v + ph2)) % 2 == 0
    elif pattern == "grid":
        m = (frac(f * u + ph) < 0.25) | (frac(f * v + ph2) < 0.25)
    elif pattern == "wavy":
        t = frac(f * u + 0.12 * sin(TAU * 1.5 * v * 2) + ph)
        m = (t > 0) & (t < 0.5)
    elif pattern == "zigzag":
        tri = np.abs(frac(f * 1.2 * v + ph2) - 0.5)
        m = frac(f * u + 0.8 * tri + ph) < 0.5
    elif pattern == "speckled":
        small = rng.random((S // 4, S // 4)) < 0.3
        m = np.kron(small, np.ones((4, 4))) > 0
    elif pattern in ("plain", "solid"):
        m = np.ones((S, S), bool)
    else:
        raise KeyError(pattern)
    return m.astype(F)


def _taps(n_in: int, n_out: int, kernel, support: float) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and normalised weights (n_out x taps) of a PIL-style antialiased separable resize."""
    scale = n_in / n_out
    fs = max(scale, 1.0)
    centre = (np.arange(n_out, dtype=F) + 0.5) * scale
    lo = np.maximum(np.floor(centre - support * fs + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.floor(centre + support * fs + 0.5), n_in).astype(np.int64)
    idx = lo[:, None] + np.arange(int((hi - lo).max()))[None, :]
    w = np.where(idx < hi[:, None], kernel((idx + 0.5 - centre[:, None]) / fs), 0.0)
    total = functools.reduce(np.add, list(w.T))                # summed tap by tap: a fixed order
    return np.minimum(idx, n_in - 1), w / total[:, None]


def _linear(x):
    return np.maximum(1 - np.abs(x), 0)


def _cubic(x, a: float = -0.5):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def resize(img: np.ndarray, size: int, kernel: str = "bilinear") -> np.ndarray:
    """Resize a float (H, W[, C]) image to size x size: rows, then columns, each output a tap-by-tap sum."""
    fn, support = {"bilinear": (_linear, 1.0), "bicubic": (_cubic, 2.0)}[kernel]
    out = np.asarray(img, F)
    for axis in (0, 1):
        idx, w = _taps(out.shape[axis], size, fn, support)
        moved = np.moveaxis(out, axis, 0)
        shape = (-1,) + (1,) * (moved.ndim - 1)
        acc = w[:, 0].reshape(shape) * moved[idx[:, 0]]
        for k in range(1, idx.shape[1]):
            acc = acc + w[:, k].reshape(shape) * moved[idx[:, k]]
        out = np.moveaxis(acc, 0, axis)
    return out


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(F) / 16.0, d.target.astype(np.int64)


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
    """The 8x8 scikit-learn digit `index`, upscaled smoothly (bicubic) to a soft mask placed near the centre."""
    side = int(S * scale * rng.uniform(0.9, 1.05))
    big = np.clip(resize(_digits()[0][index], side, "bicubic"), 0, 1)
    out = np.zeros((S, S), F)
    ox, oy = (S - side) // 2 + rng.integers(-3, 4, 2)
    ox, oy = int(np.clip(ox, 0, S - side)), int(np.clip(oy, 0, S - side))
    out[oy:oy + side, ox:ox + side] = big
    mask = np.clip((out - 0.35) * 3.0, 0, 1)
    return dilate(mask, thick) if thick > 1 else mask


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's two bundled photographs, decoded by PIL (uint8 RGB)."""
    import sklearn.datasets
    from PIL import Image

    folder = Path(sklearn.datasets.__file__).parent / "images"
    out = []
    for name in ("china.jpg", "flower.jpg"):
        with Image.open(folder / name) as im:
            out.append(np.asarray(im.convert("RGB"), np.uint8))
    return tuple(out)


def inputs_sha256() -> dict[str, str]:
    """Hashes of what bench reads rather than draws: the digit array and the decoded photographs."""
    photos = hashlib.sha256()
    for p in _photos():
        photos.update(repr(p.shape).encode() + p.tobytes())
    return {"digits": hashlib.sha256(np.ascontiguousarray(_digits()[0]).tobytes()).hexdigest(),
            "photos": photos.hexdigest()}


def photo_patch(rng: np.random.Generator) -> np.ndarray:
    """A random square crop of one of scikit-learn's two bundled photographs, resized (bilinear) to S x S."""
    photo = _photos()[int(rng.integers(0, 2))]
    h, w, _ = photo.shape
    side = int(rng.integers(48, min(h, w) // 2))
    y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    return np.clip(resize(photo[y:y + side, x:x + side].astype(F), S, "bilinear"), 0, 255)


def finish(arr: np.ndarray, noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Box-downsample an S x S float image to OUT x OUT uint8 RGB, optionally adding Gaussian pixel noise."""
    a = np.asarray(arr, F)
    small = (a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2]) * 0.25
    if noise and rng is not None:
        small = small + rng.normal(0, noise, small.shape)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of `img` with stored (uncompressed) deflate blocks: its bytes depend on the pixels only."""
    img = np.ascontiguousarray(img, np.uint8)
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))
    blocks = [raw[i:i + 65535] for i in range(0, len(raw), 65535)]
    body = b"".join(bytes([int(i == len(blocks) - 1)]) + struct.pack("<HH", len(b), 0xFFFF ^ len(b)) + b
                    for i, b in enumerate(blocks))
    stream = b"\x78\x01" + body + struct.pack(">I", zlib.adler32(raw))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
