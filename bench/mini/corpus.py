"""The procedural image-caption corpus that the mini CLIP is pretrained on (deterministic for a seed).

Captions name colour sparingly (about half of the object and a quarter of the count captions, never digit or texture
captions): with colour words everywhere the tiny CLIP learnt colour and little else (world v1: digit zero-shot 11 %,
world v2: 23 %). Textures come at any angle and 2-6 cycles per image (world v3; v2 used four angles and 2.5-4.5
cycles, and zero-shot on the suite's textures stayed under 2x chance).

Usage:
    >>> from bench.mini.corpus import make_corpus
    >>> c = make_corpus(n=2000, seed=0)
    >>> c.images.shape, c.captions[0][:2]
    ((2000, 32, 32, 3), ['a photo of a large red striped circle.', 'a red circle on a blue background.'])

Four kinds of items, each with several captions naming random subsets of its attributes:
  object  (62%) one shape: colour, fill pattern (plain, a texture, or an outline), size, vertical position,
                background colour;
  texture (14%) a full-frame two-colour pattern at any angle and scale ("a striped texture.", "stripes.");
  digit   (14%) a scikit-learn handwritten digit in a colour ("a handwritten seven.", "the number seven.");
  several (10%) two to four small copies of a shape ("three blue stars.").
A few colour-shape pairs are held out (HELD_OUT) so the suite can show unseen combinations. Positions are only
"top"/"bottom": horizontal flips, part of bench's train augmentation, must not change what a caption says.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from bench.mini import render as R

HELD_OUT = {("red", "square"), ("blue", "triangle"), ("green", "circle"), ("yellow", "hexagon"),
            ("purple", "star"), ("orange", "heart"), ("pink", "diamond"), ("white", "cross")}
COUNTS = ("one", "two", "three", "four")
COLOR_NAMES = tuple(R.COLORS)
PATTERN_NOUN = {"striped": "stripes", "dotted": "dots", "checkered": "checks", "grid": "grid lines",
                "wavy": "waves", "zigzag": "zigzags", "speckled": "speckles"}
SUITE_DIGITS_PER_CLASS = 64     # scikit-learn digits reserved for the suite, per class


@dataclass
class Corpus:
    images: np.ndarray              # (n, 32, 32, 3) uint8
    captions: list[list[str]]       # several captions per image
    kinds: list[str]


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _frame(rng: np.random.Generator, noun_phrase: str, sketch: bool = False) -> str:
    forms = ["a photo of {}.", "{}.", "a picture of {}.", "an image of {}.", "a photo of {}.", "there is {}."]
    if sketch:
        forms = ["a sketch of {}.", "a drawing of {}.", "an outline of {}."]
    return forms[int(rng.integers(len(forms)))].format(article(noun_phrase))


def _pick_other(rng: np.random.Generator, avoid: set[str]) -> str:
    return str(rng.choice([c for c in COLOR_NAMES if c not in avoid]))


def _object(rng: np.random.Generator, n_caps: int):
    while True:
        shape, color = str(rng.choice(R.SHAPES)), str(rng.choice(COLOR_NAMES))
        if (color, shape) not in HELD_OUT:
            break
    fill = str(rng.choice(["plain"] * 14 + list(R.PATTERNS) + ["outline"] * 4))
    bg = _pick_other(rng, {color, "white"} if fill != "plain" else {color})
    large = bool(rng.random() < 0.8)
    r = rng.uniform(0.62, 0.85) if large else rng.uniform(0.38, 0.5)
    pos = "middle"
    cy = rng.uniform(-0.08, 0.08)
    if not large and rng.random() < 0.4:
        pos = str(rng.choice(["top", "bottom"]))
        cy = (-1 if pos == "top" else 1) * rng.uniform(0.42, 0.5)
    cx = rng.uniform(-0.12, 0.12)
    mask = R.shape_mask(shape, cx, cy, r, rng.normal(0, 0.12))
    fg = R.jitter(color, rng)
    img = R.solid(R.jitter(bg, rng))
    if fill == "outline":
        img = R.paint(img, R.outline(mask, 7), R.solid(fg))
    elif fill == "plain":
        img = R.paint(img, mask, R.solid(fg))
    else:
        second = R.jitter("white" if color not in ("white", "yellow", "pink") else "black", rng)
        img = R.paint(img, mask, R.two_tone(R.pattern_mask(fill, rng, freq=rng.uniform(4, 6)), fg, second))
    caps = []
    for _ in range(n_caps):
        mods = [m for m, ok in (("large" if large else "small", True), (color, rng.random() < 0.5),
                                (fill, fill not in ("plain", "outline"))) if ok]
        k = int(rng.choice([0, 1, 1, 1, 2, 2, 3]))
        words = [m for m in mods if m in set(rng.permutation(mods)[:k].tolist())]
        noun = "shape" if color in words and rng.random() < 0.2 else shape
        phrase = " ".join(words + [noun])
        sketch = fill == "outline" and rng.random() < 0.5
        if fill == "outline" and not sketch:
            phrase += " outline"
        if rng.random() < 0.12:
            phrase += f" on {article(bg)} background"
        elif pos != "middle" and rng.random() < 0.3:
            phrase += f" at the {pos}"
        caps.append(_frame(rng, phrase, sketch=sketch))
    return img, caps


def _texture(rng: np.random.Generator, n_caps: int):
    pattern = str(rng.choice(R.PATTERNS))
    c1 = str(rng.choice(COLOR_NAMES))
    c2 = _pick_other(rng, {c1})
    mask = R.pattern_mask(pattern, rng, freq=rng.uniform(2.0, 6.0), angle=rng.uniform(0, math.pi))
    img = R.two_tone(mask, R.jitter(c1, rng), R.jitter(c2, rng))
    caps = []
    for _ in range(n_caps):
        u = rng.random()
        if u < 0.4:
            caps.append(f"{pattern} texture." if rng.random() < 0.5 else f"a {pattern} texture.")
        elif u < 0.6:
            caps.append(f"{PATTERN_NOUN[pattern]}.")
        elif u < 0.8:
            caps.append(f"a {pattern} pattern.")
        else:
            caps.append(f"a photo of a {pattern} surface.")
    return img, caps


def _digit(rng: np.random.Generator, n_caps: int, pool: list[int]):
    index = pool[int(rng.integers(len(pool)))]
    word = R.DIGITS[R.digit_label(index)]
    color = str(rng.choice(COLOR_NAMES))
    bg = _pick_other(rng, {color})
    img = R.paint(R.solid(R.jitter(bg, rng)), R.digit_mask(index, rng), R.solid(R.jitter(color, rng)))
    forms = ["a handwritten {w}.", "the number {w}.", "a photo of the number {w}.", "the digit {w}."]
    caps = [forms[int(rng.integers(len(forms)))].format(w=word, c=color, b=article(bg)) for _ in range(n_caps)]
    return img, caps


def _several(rng: np.random.Generator, n_caps: int):
    while True:
        shape, color = str(rng.choice(R.SHAPES)), str(rng.choice(COLOR_NAMES))
        if (color, shape) not in HELD_OUT:
            break
    k = int(rng.integers(2, 5))
    bg = _pick_other(rng, {color})
    img = R.solid(R.jitter(bg, rng))
    cells = rng.permutation(4)[:k]
    for cell in cells:
        cx, cy = (-0.5 if cell % 2 == 0 else 0.5), (-0.5 if cell < 2 else 0.5)
        mask = R.shape_mask(shape, cx + rng.normal(0, 0.05), cy + rng.normal(0, 0.05), rng.uniform(0.3, 0.4),
                            rng.normal(0, 0.12))
        img = R.paint(img, mask, R.solid(R.jitter(color, rng)))
    caps = []
    for _ in range(n_caps):
        w = COUNTS[k - 1]
        caps.append(str(rng.choice([f"{w} {color} {R.plural(shape)}.", f"{w} {R.plural(shape)}.",
                                    f"a photo of {w} {R.plural(shape)}.", f"some {R.plural(shape)}."])))
    return img, caps


def make_corpus(n: int = 12000, seed: int = 0, n_captions: int = 4) -> Corpus:
    """`n` images with `n_captions` captions each; the same (n, seed) always gives the same corpus."""
    rng = np.random.default_rng([seed, 101])
    pool = R.digit_pool("corpus", SUITE_DIGITS_PER_CLASS)
    kinds = rng.choice(["object", "texture", "digit", "several"], size=n, p=[0.62, 0.14, 0.14, 0.10])
    images = np.empty((n, R.OUT, R.OUT, 3), np.uint8)
    captions: list[list[str]] = []
    for i, kind in enumerate(kinds):
        if kind == "object":
            img, caps = _object(rng, n_captions)
        elif kind == "texture":
            img, caps = _texture(rng, n_captions)
        elif kind == "digit":
            img, caps = _digit(rng, n_captions, pool)
        else:
            img, caps = _several(rng, n_captions)
        images[i] = np.asarray(R.finish(img))
        captions.append(caps)
    return Corpus(images, captions, [str(k) for k in kinds])


def corpus_sha256(corpus: Corpus) -> str:
    """One hash over the images (uint8, row-major), the captions and the kinds."""
    h = hashlib.sha256(np.ascontiguousarray(corpus.images, np.uint8).tobytes())
    h.update(json.dumps([corpus.captions, corpus.kinds]).encode())
    return h.hexdigest()


def vocabulary_check(corpus: Corpus) -> dict[str, int]:
    """How many captions mention each colour, shape, pattern and digit word (a quick sanity table)."""
    words = list(COLOR_NAMES) + list(R.SHAPES) + list(R.PATTERNS) + list(R.DIGITS)
    text = " ".join(" ".join(c) for c in corpus.captions)
    return {w: len([m for m in text.split() if m.strip(".") == w]) for w in words}


if __name__ == "__main__":  # pragma: no cover - a quick look: python -m bench.mini.corpus
    import time

    t0 = time.time()
    c = make_corpus(2000)
    print(f"{len(c.images)} images in {time.time() - t0:.1f}s", c.captions[:3])
