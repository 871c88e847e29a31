"""Bootstrap intervals and paired tests for accuracies over seeds and test images (numpy only, deterministic).

Usage:
    >>> import numpy as np
    >>> from bench.report.stats import Runs, marginal, paired, rng_for, percentile_interval, p_value, holm
    >>> a = Runs(seeds=(1, 2, 3), acc={"all": np.array([.80, .82, .81])}, n={"all": np.array([1000] * 3)})
    >>> reps = marginal(a, rng_for("example"))            # {"all": (B,) replicates of the seed-mean accuracy}
    >>> percentile_interval(reps["all"])                  # 95 % interval, as fractions

The procedure (docs/DESIGN.md, "Uncertainty"): a two-level bootstrap. Level 1 resamples the seeds of a
(method, dataset, protocol, K) group with replacement, the same seed draw for every evaluation of the cell
(Base and New, source and targets). Level 2 resamples the N test images of each drawn seed with replacement;
the mean of N resampled right/wrong outcomes is drawn from its exact large-sample (multinomial → normal) form:
p + sqrt(p(1 - p)/N)·z for one method, and for two methods on the same images the pair of accuracies with the
covariance (p11 - pA·pB)/N of their 2×2 right/wrong table, so paired comparisons keep the correlation between
methods. A replicate of any statistic (a dataset average, an HM) is that statistic of the per-dataset
replicates. Every draw comes from a generator seeded by SEED and the group's key, so tables are reproducible
and one group's numbers do not depend on which other groups exist.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

B = 1000                 # bootstrap replicates
LEVEL = 0.95             # interval coverage
ALPHA = 0.05             # family-wise level of the tie test (Holm across the methods of a column)
SEED = 15                # base seed of every generator
TEST_NAME = "paired bootstrap over seeds and test images (two-sided, bootstrap standard error)"
CORRECTION = "Holm"


@dataclass
class Runs:
    """One method's runs on one dataset: per evaluation, one entry per seed (in `seeds` order)."""

    seeds: tuple[int, ...]
    acc: dict[str, np.ndarray]                   # eval → (S,) accuracy as a fraction
    n: dict[str, np.ndarray]                     # eval → (S,) test images (0 = unknown: seed-only)
    correct: dict[str, list] = field(default_factory=dict)   # eval → per seed: bool (N,) array or None
    digest: dict[str, list] = field(default_factory=dict)    # eval → per seed: hash of the labels, or None

    @property
    def evals(self) -> list[str]:
        return list(self.acc)


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded by SEED and a stable hash of `key` (never Python's salted hash)."""
    h = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng([SEED, int.from_bytes(h[:8], "little")])


def _sd(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Standard deviation of the mean of n resampled right/wrong outcomes with accuracy p (0 where n unknown)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt(np.clip(p * (1.0 - p), 0.0, None) / n)
    return np.where(n > 0, sd, 0.0)


def seed_draw(rng: np.random.Generator, s: int, b: int = B) -> np.ndarray:
    """(b, s) indices: each replicate draws s seeds out of s with replacement."""
    return rng.integers(0, s, size=(b, s))


def _draw(p: np.ndarray, sd: np.ndarray, idx: np.ndarray, z: np.ndarray) -> np.ndarray:
    """(..., b) replicates from (..., s) accuracies and image-level sds: per replicate, the mean over the drawn
    seeds `idx` (b, s) of p + sd·z (z: (..., b, s)), clipped to [0, 1]; NaN accuracies (no such run) skipped."""
    x = p[..., idx] + sd[..., idx] * z
    if not (np.nan_to_num(p - 6 * sd, nan=0.5) >= 0).all() or not (np.nan_to_num(p + 6 * sd, nan=0.5) <= 1).all():
        x = np.clip(x, 0.0, 1.0)
    if np.isnan(p).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x, axis=-1).astype(np.float32)
    return x.mean(axis=-1, dtype=np.float32)


def marginal(runs: Runs, rng: np.random.Generator, b: int = B) -> dict[str, np.ndarray]:
    """Replicates of the seed-mean accuracy of every evaluation (shared seed draw), as float32 fractions."""
    idx = seed_draw(rng, len(runs.seeds), b)
    evals = runs.evals
    p = np.stack([runs.acc[e] for e in evals]).astype(np.float32)
    sd = _sd(p, np.stack([runs.n[e] for e in evals])).astype(np.float32)
    z = rng.standard_normal((len(evals), *idx.shape), dtype=np.float32)
    return dict(zip(evals, _draw(p, sd, idx, z)))


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


def joint_right(a: Runs, b: Runs, e: str, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, bool]:
    """Per aligned pair, the fraction of test images both get right (p11), and whether every pair could be
    matched image by image (both have predictions of the same images); unmatched pairs get p11 = pA·pB."""
    pa, pb = a.acc[e][ia], b.acc[e][ib]
    p11, matched = pa * pb, True
    ca, cb = a.correct.get(e), b.correct.get(e)
    da, db = a.digest.get(e), b.digest.get(e)
    for j, (i, k) in enumerate(zip(ia, ib)):
        if ca is None or cb is None or ca[i] is None or cb[k] is None or da[i] is None or da[i] != db[k]:
            matched = False
            continue
        p11[j] = float(np.count_nonzero(ca[i] & cb[k])) / len(ca[i])
    return p11, matched


def paired_many(a: Runs, others: list[Runs], rng: np.random.Generator, ia: np.ndarray, ib: np.ndarray,
                evals: list[str], b_reps: int = B) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Joint replicates of A against each of `others`, all aligned alike (runs ia of A with runs ib of each
    other, see `align`) over the same `evals`: one seed draw, A's image-level noise z1 and, per other, noise
    correlated with z1 as their 2×2 right/wrong table says. Returns (reps of A (E, b), reps of the others
    (K, E, b), per other: matched image by image everywhere)."""
    idx = seed_draw(rng, len(ia), b_reps)
    pa = np.stack([a.acc[e][ia] for e in evals])                                  # (E, s)
    na = np.stack([a.n[e][ia] for e in evals])
    pb = np.stack([np.stack([o.acc[e][ib] for e in evals]) for o in others])     # (K, E, s)
    nb = np.stack([np.stack([o.n[e][ib] for e in evals]) for o in others])
    joint = [[joint_right(a, o, e, ia, ib) for e in evals] for o in others]
    p11 = np.array([[j[0] for j in row] for row in joint])
    sa, sb = np.sqrt(np.clip(pa * (1 - pa), 0, None)), np.sqrt(np.clip(pb * (1 - pb), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where((sa > 0) & (sb > 0) & (na == nb), (p11 - pa * pb) / (sa * sb), 0.0)
    rho = np.nan_to_num(np.clip(rho, -1.0, 1.0)).astype(np.float32)
    z1 = rng.standard_normal((len(evals), *idx.shape), dtype=np.float32)
    z2 = rng.standard_normal((len(others), len(evals), *idx.shape), dtype=np.float32)
    r = rho[..., idx]
    zb = r * z1 + np.sqrt(1.0 - r * r) * z2
    ra = _draw(pa.astype(np.float32), _sd(pa, na).astype(np.float32), idx, z1)
    rb = _draw(pb.astype(np.float32), _sd(pb, nb).astype(np.float32), idx, zb)
    return ra, rb, [all(j[1] for j in row) for row in joint]


def paired(a: Runs, b: Runs, rng: np.random.Generator, a_fixed: bool = False, b_fixed: bool = False,
           b_reps: int = B) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Joint replicates of two methods' seed-mean accuracies on one dataset (`paired_many` with one other).
    Returns (reps_a, reps_b, info) with info = {"pairs": aligned runs, "matched": image-paired everywhere}."""
    ia, ib = align(a, b, a_fixed, b_fixed)
    evals = [e for e in a.evals if e in b.acc]
    if not len(ia) or not evals:
        return {}, {}, {"pairs": 0, "matched": False}
    ra, rb, matched = paired_many(a, [b], rng, ia, ib, evals, b_reps)
    return dict(zip(evals, ra)), dict(zip(evals, rb[0])), {"pairs": len(ia), "matched": matched[0]}


def percentile_interval(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of the replicates (NaN, NaN when there are none)."""
    lo, hi = percentile_intervals(np.asarray(reps, dtype=np.float64).reshape(1, -1), level)
    return float(lo[0]), float(hi[0])


def percentile_intervals(reps: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise central percentile intervals of (K, b) replicates (linear interpolation, numpy's default);
    NaN replicates are ignored, rows without any give NaN."""
    x = np.sort(np.asarray(reps, dtype=np.float64), axis=1)                   # NaN sort last
    n = (~np.isnan(x)).sum(axis=1)
    out = []
    for q in ((1.0 - level) / 2.0, (1.0 + level) / 2.0):
        pos = q * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        rows = np.arange(len(x))
        v = x[rows, lo] + (x[rows, hi] - x[rows, lo]) * (pos - lo)
        out.append(np.where(n > 0, v, np.nan))
    return out[0], out[1]


def p_values(delta: np.ndarray, delta_reps: np.ndarray) -> np.ndarray:
    """Row-wise two-sided p-values of 'difference = 0' (see `p_value`) for (K,) differences, (K, b) replicates."""
    d = np.asarray(delta_reps, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(d, axis=1, ddof=1)
    delta = np.asarray(delta, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(delta) / se
    p = np.array([math.erfc(v / math.sqrt(2.0)) if v == v else float("nan") for v in z])
    p = np.where(se > 0, p, np.where(delta == 0, 1.0, 0.0))
    return np.where(np.isnan(delta) | (np.sum(~np.isnan(d), axis=1) < 2), np.nan, p)


def p_value(delta: float, delta_reps: np.ndarray) -> float:
    """Two-sided p-value of 'difference = 0' from the bootstrap distribution of the difference: the observed
    difference over the replicates' standard deviation, against a standard normal. (A normal reference rather
    than tail counting, so the small p-values Holm needs with many methods are resolved with B replicates.)"""
    return float(p_values(np.array([delta]), np.asarray(delta_reps, dtype=np.float64).reshape(1, -1))[0])


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


def hm(base: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Harmonic mean 2BN/(B+N), elementwise (0 where both are 0)."""
    base, new = np.asarray(base, dtype=np.float64), np.asarray(new, dtype=np.float64)
    s = base + new
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, 2.0 * base * new / s, 0.0)
