"""Intervals and tests for accuracies over seeds × test images: a crossed random-effects model, solved analytically.

Usage:
    >>> import numpy as np
    >>> from bench.report import stats
    >>> right = np.random.default_rng(0).random((1, 3, 1000)) < 0.8       # (methods, seeds, images) right/wrong
    >>> m = stats.moments(right)                                           # one evaluation of one method
    >>> est = stats.linear([[(m, np.array([1.0]))]], point=float(right.mean()))
    >>> est.interval()                                                     # 95 % t interval, fractions

The model (docs/DESIGN.md, "Uncertainty"). Run s of a method on test image i is right (y_si = 1) or not;
y_si = μ + seed_s + image_i + residual_si, seeds and images random (images drawn from the population the test
set stands for, seeds from the training randomness). The estimand is μ, the method's expected accuracy over
seeds and images; its estimate, the mean over S seeds and N images, has

    Var = σ²_seed/S + σ²_image/N + σ²_residual/(S·N),

estimated without bias from the two-way ANOVA mean squares of the S × N table (MS_seed, MS_image, MS_residual):
V = s²/S + (MS_image − MS_residual)/(S·N), s² the variance of the per-seed accuracies. The image term is
clipped at 0. V is a sum of mean squares with few (S − 1) and many (N − 1) degrees of freedom, so the reference
is Student's t with Satterthwaite's degrees of freedom (F. E. Satterthwaite, Biometrics Bulletin 2:110, 1946).
A statistic of several evaluations — an average over datasets, an HM of Base and New (linearised: the delta
method), a difference of two methods on the same seeds and images — is a linear combination Σ c·y over the
evaluations' tables: the per-seed values of the combination give s², the combination's image and residual mean
squares give the image term (the image pairing of two methods enters through their cross mean squares). Datasets
whose runs have different seeds are independent blocks whose variances add.

One seed: no seed variance can be estimated; the interval covers the test images only (a Wilson score interval
for one accuracy, Agresti–Min for a paired difference; A. Agresti & Y. Min, Biometrics 61:515, 2005) and a paired
difference is tested by the exact McNemar test (binomial on the discordant images). Without per-image
predictions the image term is bounded from above by p(1 − p)/N (a method's seeds taken as fully correlated on the
images; two methods as uncorrelated). Everything is analytic: no resampling, no random seed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

LEVEL = 0.95             # interval coverage
ALPHA = 0.05             # family-wise level of the tie test (Holm across the methods of a column)
TEST_NAME = "paired test on seeds × test images (two-sided, t-type reference for few seeds; exact McNemar with one seed)"
CORRECTION = "Holm"


@dataclass
class Runs:
    """One method's runs on one dataset: per evaluation, one entry per seed (in `seeds` order)."""

    seeds: tuple[int, ...]
    acc: dict[str, np.ndarray]                   # eval → (S,) accuracy as a fraction
    n: dict[str, np.ndarray]                     # eval → (S,) test images (0 = unknown)
    correct: dict[str, list] = field(default_factory=dict)   # eval → per seed: bool (N,) array or None
    digest: dict[str, list] = field(default_factory=dict)    # eval → per seed: hash of the labels, or None

    @property
    def evals(self) -> list[str]:
        return list(self.acc)


@dataclass
class Moments:
    """Sufficient statistics of one evaluation of k run sets on S aligned seeds (k = 1: a method, 2: a pair).

    acc: (..., k, S) per-seed accuracies; img, res: (..., k, k) image and residual mean-square (cross-product)
    matrices of the S × N tables; n: test images (0 = unknown); paired: the k sets were matched image by image;
    ones: one-seed tables of a pair (discordant counts for McNemar) as (..., 2) = (first right only, second only).
    """

    acc: np.ndarray
    img: np.ndarray
    res: np.ndarray
    n: int
    paired: bool = True
    discordant: np.ndarray | None = None


def moments(y: np.ndarray) -> Moments:
    """Moments of (..., k, S, N) right/wrong tables (k run sets on the same S seeds and N images), vectorised
    over leading axes. MS_image = S·cov(image means), MS_residual = the double-centred cross products /
    ((S − 1)(N − 1)) (0 with one seed)."""
    y = np.asarray(y)
    s, n = y.shape[-2], y.shape[-1]
    x = y.astype(np.float32)
    acc = x.mean(axis=-1, dtype=np.float64)                                      # (..., k, S)
    img_mean = x.mean(axis=-2, dtype=np.float64)                                # (..., k, N)
    grand = acc.mean(axis=-1)                                                   # (..., k)
    centred = img_mean - grand[..., None]
    sp_img = s * np.einsum("...an,...bn->...ab", centred, centred)
    img = sp_img / max(n - 1, 1)
    if s > 1:
        total = np.einsum("...asn,...bsn->...ab", x, x, dtype=np.float64) - s * n * grand[..., :, None] * grand[..., None, :]
        dev = acc - grand[..., None]
        sp_seed = n * np.einsum("...as,...bs->...ab", dev, dev)
        res = (total - sp_seed - sp_img) / ((s - 1) * max(n - 1, 1))
    else:
        res = np.zeros_like(img)
    disc = None
    if y.shape[-3] == 2 and s == 1:
        a, b = y[..., 0, 0, :].astype(bool), y[..., 1, 0, :].astype(bool)
        disc = np.stack([(a & ~b).sum(axis=-1), (~a & b).sum(axis=-1)], axis=-1)
    return Moments(acc, img, res, n, True, disc)


def moments_from_counts(acc: np.ndarray, n: int) -> Moments:
    """Moments without per-image predictions, from (k, S) accuracies: the largest image term the accuracies
    allow for each run set (seeds fully correlated, MS_image = S·p(1 − p)), run sets uncorrelated."""
    acc = np.asarray(acc, dtype=np.float64)
    p = acc.mean(axis=-1)
    img = np.diag(acc.shape[-1] * p * (1.0 - p))
    return Moments(acc, img, np.zeros_like(img), int(n), False)


def stack_pair(a: Moments, b: Moments) -> Moments:
    """Two run sets' own moments as an unpaired pair (different images, or no predictions): no cross terms."""
    z = np.zeros((2, 2))
    img, res = z.copy(), z.copy()
    img[0, 0], img[1, 1], res[0, 0], res[1, 1] = a.img[0, 0], b.img[0, 0], a.res[0, 0], b.res[0, 0]
    n = a.n if a.n == b.n else min(a.n, b.n)
    return Moments(np.concatenate([a.acc, b.acc]), img, res, n, False)


@dataclass
class Estimate:
    """A statistic with its interval and test of 'it is 0', in the statistic's units; arrays over leading axes of
    the moments (floats for one). basis: what the variance accounts for — 'seeds+images', 'images' (one seed:
    no seed variance) or 'seeds' (no image counts)."""

    value: np.ndarray | float
    se: np.ndarray | float
    df: np.ndarray | float
    lo: np.ndarray | float
    hi: np.ndarray | float
    p: np.ndarray | float
    basis: str

    def interval(self) -> tuple:
        return self.lo, self.hi

    def item(self, i: int) -> Estimate:
        """The i-th Estimate of a vectorised one (floats)."""
        pick = lambda x: float(np.asarray(x).reshape(-1)[i]) if np.ndim(x) else float(x)  # noqa: E731
        return Estimate(*(pick(x) for x in (self.value, self.se, self.df, self.lo, self.hi, self.p)), self.basis)


@dataclass
class Parts:
    """The variance of a statistic in two parts: `seed`, estimated from per-seed values with `seed_df` degrees of
    freedom (few), and `image`, estimated from the image and residual mean squares with `image_df` (many)."""

    seed: np.ndarray
    seed_df: np.ndarray
    image: np.ndarray
    image_df: np.ndarray
    seeds: int
    least: np.ndarray | float = 0.0      # the smallest value the seed part can have: its residual share

    @property
    def total(self) -> np.ndarray:
        return np.maximum(self.seed, self.least) + self.image


def variance(blocks: list[list[tuple[Moments, np.ndarray]]]) -> Parts:
    """The variance of Σ c·(seed-mean accuracy) over the parts of independent blocks, in its two parts.
    A block: (moments, coefficients (..., k)) per evaluation, all on the same S seeds. Vectorised over the leading
    axes of the moments. Per block: seed part s²/S (s² the variance of the per-seed values of the combination,
    S − 1 df), floored at its residual share (a seed variance component below 0 is 0: then the floor is a known
    image-level term); image part Σ (MS_image − MS_residual)/(S·N) of the combination, clipped at 0 per evaluation;
    blocks add, their df combine by Satterthwaite's rule."""
    seed = seed_den = image = image_den = least = 0.0
    fewest = math.inf
    for block in blocks:
        s = block[0][0].acc.shape[-1]
        fewest = min(fewest, s)
        floor = floor_den = 0.0
        for m, c in block:
            if m.n <= 0:
                continue                                    # image count unknown: the seed part only
            img = np.einsum("...a,...ab,...b->...", c, m.img, c) / (s * m.n)
            if s == 1:
                image, image_den = image + img, image_den + img ** 2 / max(m.n - 1, 1)
                continue
            res = np.einsum("...a,...ab,...b->...", c, m.res, c) / (s * m.n)
            keep = img > res                                # the image component is clipped at 0 (and leaves the df)
            image = image + np.where(keep, img - res, 0.0)
            image_den = image_den + np.where(keep, img ** 2 / max(m.n - 1, 1) + res ** 2 / ((s - 1) * max(m.n - 1, 1)), 0.0)
            floor, floor_den = floor + res, floor_den + res ** 2 / ((s - 1) * max(m.n - 1, 1))
        if s > 1:
            z = sum(np.einsum("...k,...ks->...s", c, m.acc) for m, c in block)
            term = np.var(z, axis=-1, ddof=1) / s
            seed, seed_den = seed + term, seed_den + term ** 2 / (s - 1)
            least = least + floor
    parts = [np.asarray(x, dtype=np.float64) for x in (seed, seed_den, image, image_den)]
    with np.errstate(divide="ignore", invalid="ignore"):
        seed_df = np.where(parts[1] > 0, parts[0] ** 2 / parts[1], np.inf)
        image_df = np.where(parts[3] > 0, parts[2] ** 2 / parts[3], np.inf)
    return Parts(parts[0], seed_df, parts[2], image_df, int(fewest), np.asarray(least, dtype=np.float64))


_U = (np.arange(256) + 0.5) / 256          # quadrature over the quantiles of the χ² of the seed part


@functools.lru_cache(maxsize=4096)
def _chi_over_nu(nu: float) -> np.ndarray:
    """χ²_ν/ν at the mid-quantiles _U (ν rounded by the caller, so the cache hits)."""
    from scipy.special import chdtri

    return chdtri(nu, 1.0 - _U) / nu


def _fiducial(parts: Parts) -> np.ndarray:
    """(..., J) draws-free fiducial variances: image + seed·ν/χ²_ν at the J mid-quantiles of χ²_ν (ν = seed df)."""
    nu = np.clip(np.where(np.isfinite(parts.seed_df), parts.seed_df, 1e6), 1e-3, 1e6)
    flat = np.round(np.asarray(nu, dtype=np.float64).ravel(), 3)
    ratio = np.stack([_chi_over_nu(float(v)) for v in flat]).reshape(*np.shape(nu), len(_U))
    least = np.asarray(parts.least, dtype=np.float64)[..., None]
    return parts.image[..., None] + np.maximum(parts.seed[..., None] / ratio, least)


def reference_quantile(parts: Parts, level: float = LEVEL, v: np.ndarray | None = None) -> np.ndarray:
    """The half-width h with P(|Z|·√V* ≤ h) = level over the fiducial variances V* (`_fiducial`): with no image
    part this is Student's t_ν, with no seed part the normal. Newton's method from below: F(h) = mean erf(h/√(2V*))
    is concave for h > 0; it starts from Satterthwaite's t quantile (close) and is kept inside the bracket of the
    smallest and largest component's normal quantiles."""
    from scipy.special import erf, ndtri, stdtrit

    z = ndtri((1.0 + level) / 2.0)
    v = _fiducial(parts) if v is None else v
    sd = np.sqrt(v)
    lo, hi = z * sd.min(axis=-1), z * sd.max(axis=-1)
    seed = np.maximum(parts.seed, parts.least)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.clip(np.where(parts.seed > 0, (seed + parts.image) ** 2 / (seed ** 2 / parts.seed_df), 1e6), 0.5, 1e6)
    h = np.clip(stdtrit(df, (1.0 + level) / 2.0) * np.sqrt(seed + parts.image), lo, hi)
    scale = math.sqrt(2.0 / math.pi) / v.shape[-1]
    for _ in range(60):
        x = h[..., None] / sd
        f = erf(x / math.sqrt(2.0)).sum(axis=-1) / v.shape[-1] - level
        slope = (np.exp(-0.5 * x * x) / sd).sum(axis=-1) * scale
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(slope > 0, -f / slope, 0.0)
        h = np.clip(h + step, lo, hi)
        if np.all(np.abs(step) <= 1e-9 * np.abs(h)):
            break
    return h


def reference_p(parts: Parts, delta, v: np.ndarray | None = None) -> np.ndarray:
    """Two-sided p-value of 'the statistic is 0' against the same reference: E 2Φ(−|Δ|/√V*)."""
    from scipy.special import erfc

    v = _fiducial(parts) if v is None else v
    with np.errstate(divide="ignore", invalid="ignore"):
        return erfc(np.abs(np.asarray(delta, dtype=np.float64))[..., None] / np.sqrt(2 * v)).mean(axis=-1)


def linear(blocks: list[list[tuple[Moments, np.ndarray]]], point, level: float = LEVEL) -> Estimate:
    """The Estimate of a linear statistic (see `variance`) whose value is `point` (vectorised like the moments).
    One seed, one evaluation: a Wilson interval for one method's accuracy; for a paired difference (coefficients
    c, −c) Agresti–Min and the exact McNemar p."""
    parts = variance(blocks)
    s = parts.seeds
    point = np.asarray(point, dtype=np.float64)
    has_n = all(m.n > 0 for block in blocks for m, _ in block)
    basis = "seeds" if not has_n else "images" if s == 1 else "seeds+images"
    se = np.sqrt(np.clip(parts.total, 0.0, None)) if (has_n or s > 1) else np.full(point.shape, np.nan)
    df = parts.seed_df
    v = _fiducial(parts)
    half = reference_quantile(parts, level, v)
    p = np.where(se > 0, reference_p(parts, point, v), np.where(point == 0, 1.0, 0.0))
    lo, hi = point - half, point + half
    p = np.where(np.isnan(se) | np.isnan(point), np.nan, p)
    if s == 1 and has_n and len(blocks) == 1 and len(blocks[0]) == 1:
        m, c = blocks[0][0]
        c = np.asarray(c, dtype=np.float64)
        if c.shape[-1] == 1 and np.all(c[..., 0] == 1.0):
            lo, hi = wilson(m.acc[..., 0, 0], m.n, level)
        elif c.shape[-1] == 2 and np.all(c[..., 0] == -c[..., 1]) and m.discordant is not None and m.paired:
            n10, n01 = m.discordant[..., 0], m.discordant[..., 1]
            p = mcnemar_exact(n10, n01)
            d_lo, d_hi = agresti_min(n10, n01, m.n, level)
            lo, hi = np.minimum(c[..., 0] * d_lo, c[..., 0] * d_hi), np.maximum(c[..., 0] * d_lo, c[..., 0] * d_hi)
    out = [point, se, df, lo, hi, p]
    if point.ndim == 0:
        out = [float(x) for x in out]
    return Estimate(*out, basis)


def linear_many(items: list[tuple[list, float]], level: float = LEVEL) -> list[Estimate]:
    """`linear` for many (blocks, point): statistics whose blocks have the same shape (per block and evaluation:
    moments' shape, image count, pairing, one-seed discordant counts) are stacked on a leading axis and solved
    by one vectorised call."""
    groups: dict[tuple, list[int]] = {}
    for i, (blocks, _) in enumerate(items):
        key = tuple(tuple((m.acc.shape, m.n, m.paired, m.discordant is None, np.shape(c)) for m, c in b) for b in blocks)
        groups.setdefault(key, []).append(i)
    out: list = [None] * len(items)
    for idx in groups.values():
        many = [items[i][0] for i in idx]
        stacked = [[_stack([blocks[b][j] for blocks in many]) for j in range(len(many[0][b]))]
                   for b in range(len(many[0]))]
        est = linear(stacked, np.array([items[i][1] for i in idx], dtype=np.float64), level)
        for k, i in enumerate(idx):
            out[i] = est.item(k)
    return out


def _stack(parts: list[tuple[Moments, np.ndarray]]) -> tuple[Moments, np.ndarray]:
    """Moments of one shape and their coefficients, stacked on a new leading axis."""
    ms = [m for m, _ in parts]
    disc = None if ms[0].discordant is None else np.stack([m.discordant for m in ms])
    return (Moments(np.stack([m.acc for m in ms]), np.stack([m.img for m in ms]), np.stack([m.res for m in ms]),
                    ms[0].n, ms[0].paired, disc), np.stack([np.asarray(c, dtype=np.float64) for _, c in parts]))


def wilson(p, n: int, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval of a binomial proportion p of n (elementwise)."""
    from scipy.special import ndtri

    z = ndtri((1.0 + level) / 2.0)
    p = np.asarray(p, dtype=np.float64)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def agresti_min(n10, n01, n: int, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Interval of a paired difference of proportions (n10 − n01)/n: Wald after adding ½ to each of the four
    cells of the 2 × 2 table (Agresti & Min 2005). Elementwise."""
    from scipy.special import ndtri

    z = ndtri((1.0 + level) / 2.0)
    a, b, m = np.asarray(n10) + 0.5, np.asarray(n01) + 0.5, n + 2.0
    d = (a - b) / m
    se = np.sqrt(np.clip((a + b) / m - d * d, 0.0, None) / m)
    return d - z * se, d + z * se


def mcnemar_exact(n10, n01) -> np.ndarray:
    """Exact two-sided McNemar p-value: binomial(n10 + n01, ½) on the discordant pairs (elementwise)."""
    from scipy.special import bdtr

    n10, n01 = np.asarray(n10), np.asarray(n01)
    k, m = np.minimum(n10, n01), n10 + n01
    with np.errstate(invalid="ignore"):
        return np.where(m == 0, 1.0, np.minimum(1.0, 2.0 * bdtr(k, np.maximum(m, 1), 0.5)))


def holm(pvalues: dict, alpha: float = ALPHA) -> dict:
    """Holm's step-down procedure: key → (adjusted p, rejected). NaN p-values are never rejected."""
    items = sorted(((p, k) for k, p in pvalues.items() if p == p), key=lambda t: t[0])
    m = len(items)
    out, running, stop = {}, 0.0, False
    for i, (p, k) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        stop = stop or p > alpha / (m - i)
        out[k] = (running, not stop)
    out.update({k: (float("nan"), False) for k, p in pvalues.items() if p != p})
    return out


def hm(base, new):
    """Harmonic mean 2BN/(B+N), elementwise (0 where both are 0)."""
    base, new = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    s = base + new
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, 2.0 * base * new / s, 0.0)


def hm_gradient(base, new) -> tuple[np.ndarray, np.ndarray]:
    """∂HM/∂Base = 2N²/(B+N)², ∂HM/∂New = 2B²/(B+N)² (the delta method's weights)."""
    base, new = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    s2 = (base + new) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s2 > 0, 2 * new ** 2 / s2, 0.5), np.where(s2 > 0, 2 * base ** 2 / s2, 0.5)


def align(a: Runs, b: Runs, a_fixed: bool = False, b_fixed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (into a.seeds, into b.seeds) of the runs compared: the common seeds; a side marked fixed
    (zero-shot: one run that no seed changes) is paired with every seed of the other. Empty when nothing pairs."""
    if a_fixed and len(a.seeds) == 1:
        return np.zeros(len(b.seeds), dtype=int), np.arange(len(b.seeds))
    if b_fixed and len(b.seeds) == 1:
        return np.arange(len(a.seeds)), np.zeros(len(a.seeds), dtype=int)
    common = [s for s in a.seeds if s in set(b.seeds)]
    return (np.array([a.seeds.index(s) for s in common], dtype=int),
            np.array([b.seeds.index(s) for s in common], dtype=int))
