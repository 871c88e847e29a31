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
import warnings
from dataclasses import dataclass, field

import numpy as np

B = 2000                 # bootstrap replicates
LEVEL = 0.95             # interval coverage
ALPHA = 0.05             # family-wise level of the tie test (Holm across the methods of a column)
SEED = 15                # base seed of every generator
TEST_NAME = "paired bootstrap over seeds and test images (two-sided)"
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


def marginal(runs: Runs, rng: np.random.Generator, b: int = B) -> dict[str, np.ndarray]:
    """Replicates of the seed-mean accuracy of every evaluation (shared seed draw), as float32 fractions."""
    idx = seed_draw(rng, len(runs.seeds), b)
    out = {}
    for e in runs.evals:
        p, n = runs.acc[e], runs.n[e]
        z = rng.standard_normal(idx.shape, dtype=np.float32)
        x = p[idx] + _sd(p, n)[idx] * z
        out[e] = _mean(np.clip(x, 0.0, 1.0))
    return out


def _mean(x: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds (axis 1) as float32; NaN entries (a seed without this evaluation) are skipped."""
    if np.isnan(x).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x, axis=1, dtype=np.float64).astype(np.float32)
    return x.mean(axis=1, dtype=np.float64).astype(np.float32)


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


def paired(a: Runs, b: Runs, rng: np.random.Generator, a_fixed: bool = False, b_fixed: bool = False,
           b_reps: int = B) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Joint replicates of two methods' seed-mean accuracies on one dataset: the same seed draw (over aligned
    runs) and, per drawn seed, correlated image-level noise from their 2×2 right/wrong table.
    Returns (reps_a, reps_b, info) with info = {"pairs": aligned runs, "matched": image-paired everywhere}."""
    ia, ib = align(a, b, a_fixed, b_fixed)
    info = {"pairs": len(ia), "matched": True}
    if not len(ia):
        return {}, {}, {"pairs": 0, "matched": False}
    idx = seed_draw(rng, len(ia), b_reps)
    ra, rb = {}, {}
    for e in [e for e in a.evals if e in b.acc]:
        pa, pb = a.acc[e][ia], b.acc[e][ib]
        na, nb = a.n[e][ia], b.n[e][ib]
        p11, matched = joint_right(a, b, e, ia, ib)
        info["matched"] &= matched
        sa, sb = np.sqrt(np.clip(pa * (1 - pa), 0, None)), np.sqrt(np.clip(pb * (1 - pb), 0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where((sa > 0) & (sb > 0) & (na == nb), (p11 - pa * pb) / (sa * sb), 0.0)
        rho = np.clip(rho, -1.0, 1.0)
        z1 = rng.standard_normal(idx.shape, dtype=np.float32)
        z2 = rng.standard_normal(idx.shape, dtype=np.float32)
        za, zb = z1, rho[idx] * z1 + np.sqrt(1.0 - rho[idx] ** 2) * z2
        ra[e] = _mean(np.clip(pa[idx] + _sd(pa, na)[idx] * za, 0, 1))
        rb[e] = _mean(np.clip(pb[idx] + _sd(pb, nb)[idx] * zb, 0, 1))
    return ra, rb, info


def percentile_interval(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` percentile interval of the replicates (NaN, NaN when there are none)."""
    reps = np.asarray(reps)
    if reps.size == 0 or np.isnan(reps).all():
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.nanpercentile(reps, [tail, 100.0 - tail])
    return float(lo), float(hi)


def p_value(delta_reps: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'difference = 0': twice the smaller tail of the replicates at 0
    (the level at which the percentile interval of the difference just reaches 0), with the +1 correction."""
    d = np.asarray(delta_reps)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    below, above = np.count_nonzero(d <= 0), np.count_nonzero(d >= 0)
    return float(min(1.0, 2.0 * (min(below, above) + 1) / (d.size + 1)))


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
