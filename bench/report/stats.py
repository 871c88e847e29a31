"""Bootstrap intervals and paired tests for accuracies over seeds and test images (numpy only, deterministic).

Usage:
    >>> import numpy as np
    >>> from bench.report.stats import Runs, marginal, paired, rng_for, percentile_interval, p_value, holm
    >>> a = Runs(seeds=(1, 2, 3), acc={"all": np.array([.80, .82, .81])}, n={"all": np.array([1000] * 3)})
    >>> reps = marginal(a, rng_for("example"))            # {"all": (B,) replicates of the seed-mean accuracy}
    >>> percentile_interval(reps["all"])                  # 95 % interval, as fractions

The procedure (docs/DESIGN.md, "Uncertainty"): a two-level bootstrap over the crossed design seeds × test
images. Level 1 resamples the seeds of a (method, dataset, protocol, K) group with replacement, one draw for
every evaluation of the cell (Base and New, source and targets). Level 2 resamples the N test images with
replacement, the same resample for every run (all seeds, both methods of a comparison: they were evaluated on
the same images). The resampled runs' accuracies are drawn from their exact large-sample form, a normal with
the multinomial covariance (p_uv − p_u·p_v)/N of the runs' right/wrong outcomes, p_uv taken from the per-image
predictions; so the replicate keeps the agreement between seeds and between methods on the same images. A
replicate of any statistic (a dataset average, an HM) is that statistic of the per-dataset replicates. Every
draw comes from a generator seeded by SEED and the group's key, so tables are reproducible.
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


def seed_draw(rng: np.random.Generator, s: int, b: int = B) -> np.ndarray:
    """(b, s) indices: each replicate draws s seeds out of s with replacement."""
    return rng.integers(0, s, size=(b, s))


def joint_matrix(p: np.ndarray, n: np.ndarray, correct: list, digest: list, owner: list) -> tuple[np.ndarray, bool]:
    """The (U, U) image-level covariance of U runs' mean right/wrong outcomes: Σ_uv = (p_uv − p_u·p_v)/N, with
    p_uv the fraction of test images both runs get right (from their per-image correctness on the same images).
    Where that is unknown (no predictions, other images): runs of one method (`owner`) count as fully correlated
    (ρ = 1, the largest variance their accuracies allow), runs of two methods as independent (ρ = 0).
    Returns (Σ, whether every pair of runs of different owners was matched image by image)."""
    p = np.nan_to_num(np.asarray(p, dtype=np.float64))
    sd = np.sqrt(np.clip(p * (1.0 - p), 0.0, None))
    owner = np.asarray(owner)
    cov = np.where(owner[:, None] == owner[None, :], np.outer(sd, sd), 0.0)
    groups: dict[str, list[int]] = {}
    for u, (c, d) in enumerate(zip(correct, digest)):
        if c is not None and d is not None:
            groups.setdefault(d, []).append(u)
    for units in groups.values():
        x = np.stack([correct[u] for u in units]).astype(np.float32)
        cov[np.ix_(units, units)] = (x @ x.T) / x.shape[1] - np.outer(p[units], p[units])
    known = sum(len(units) for units in groups.values())
    matched = known == len(p) and (len(groups) == 1 or len(set(owner.tolist())) == 1)
    return cov * _scale(n), matched


def _scale(n: np.ndarray) -> np.ndarray:
    """1/√(n_u·n_v): per-image covariances → covariances of the mean accuracies (0 where n is unknown)."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n[..., :, None] > 0) & (n[..., None, :] > 0), 1.0 / np.sqrt(n[..., :, None] * n[..., None, :]),
                        0.0)


def _pair_covs(a: Runs, others: list[Runs], e: str, ia: np.ndarray, ib: np.ndarray) -> np.ndarray | None:
    """The (K, 2s, 2s) covariances of A's and each other's aligned runs on evaluation e when every run has
    predictions of the same images (the usual case, vectorised); None otherwise (then `joint_matrix` per pair)."""
    ca, da = _units(a, e, ia)
    units = [_units(o, e, ib) for o in others]
    digests = set(da) | {d for _, db in units for d in db}
    if None in digests or len(digests) != 1 or any(c is None for c in ca) or \
            any(c is None for cb, _ in units for c in cb):
        return None
    xa = np.stack(ca).astype(np.float32)                                            # (s, N)
    xb = np.stack([np.stack(cb) for cb, _ in units]).astype(np.float32)             # (K, s, N)
    size = xa.shape[1]
    aa = np.broadcast_to((xa @ xa.T) / size, (len(others), len(ia), len(ia)))
    ba = (xb @ xa.T) / size                                                         # (K, s, s): B rows, A columns
    bb = (xb @ np.swapaxes(xb, 1, 2)) / size
    joint = np.concatenate([np.concatenate([aa, np.swapaxes(ba, 1, 2)], axis=2),
                            np.concatenate([ba, bb], axis=2)], axis=1).astype(np.float64)
    p = np.concatenate([np.broadcast_to(a.acc[e][ia], (len(others), len(ia))),
                        np.stack([o.acc[e][ib] for o in others])], axis=1)
    n = np.concatenate([np.broadcast_to(a.n[e][ia], (len(others), len(ia))),
                        np.stack([o.n[e][ib] for o in others])], axis=1)
    return (joint - p[:, :, None] * p[:, None, :]) * _scale(n)


def _root(cov: np.ndarray) -> np.ndarray:
    """R with R·Rᵀ = cov for (..., U, U) positive semi-definite matrices (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]).astype(np.float32)


def _replicates(p: np.ndarray, z: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(..., b) replicates: per replicate the mean over drawn runs idx (b, s) of p + z, z: (..., b, U) image-level
    noise of every run (the same resampled images for all runs), clipped to [0, 1]; NaN runs skipped."""
    rows = np.arange(idx.shape[0])[:, None]
    x = np.clip(p[..., idx] + z[..., rows, idx], 0.0, 1.0)
    if np.isnan(p).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x, axis=-1).astype(np.float32)
    return x.mean(axis=-1, dtype=np.float32)


def marginal(runs: Runs, rng: np.random.Generator, b: int = B) -> dict[str, np.ndarray]:
    """Replicates of the seed-mean accuracy of every evaluation: one seed draw shared by the evaluations, and
    per evaluation one image resample shared by all seeds (their correlation from the per-image predictions)."""
    s = len(runs.seeds)
    idx = seed_draw(rng, s, b)
    out = {}
    for e in runs.evals:
        cov, _ = joint_matrix(runs.acc[e], runs.n[e], runs.correct.get(e) or [None] * s,
                              runs.digest.get(e) or [None] * s, [0] * s)
        z = rng.standard_normal((b, s), dtype=np.float32) @ _root(cov).T
        out[e] = _replicates(runs.acc[e].astype(np.float32), z, idx)
    return out


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


def _units(r: Runs, e: str, ix: np.ndarray) -> tuple[list, list]:
    c, d = r.correct.get(e), r.digest.get(e)
    return ([c[i] for i in ix] if c else [None] * len(ix)), ([d[i] for i in ix] if d else [None] * len(ix))


def paired_many(a: Runs, others: list[Runs], rng: np.random.Generator, ia: np.ndarray, ib: np.ndarray,
                evals: list[str], b_reps: int = B) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Joint replicates of A against each of `others`, all aligned alike (runs ia of A with runs ib of each
    other, see `align`) over the same `evals`: one seed draw over the aligned pairs, and per evaluation one image
    resample shared by all 2s runs of the pair (their covariance from the per-image predictions, `joint_matrix`).
    Returns (reps of A (K, E, b), reps of the others (K, E, b), per other: matched image by image everywhere)."""
    s, k = len(ia), len(others)
    idx = seed_draw(rng, s, b_reps)
    covs, matched = np.zeros((k, len(evals), 2 * s, 2 * s)), [True] * k
    for i, e in enumerate(evals):
        fast = _pair_covs(a, others, e, ia, ib)
        if fast is not None:
            covs[:, i] = fast
            continue
        for j, o in enumerate(others):
            ca, da = _units(a, e, ia)
            cb, db = _units(o, e, ib)
            p = np.concatenate([a.acc[e][ia], o.acc[e][ib]])
            covs[j, i], ok = joint_matrix(p, np.concatenate([a.n[e][ia], o.n[e][ib]]), ca + cb, da + db,
                                          [0] * s + [1] * s)
            matched[j] &= ok
    z = rng.standard_normal((k, len(evals), b_reps, 2 * s), dtype=np.float32) @ np.swapaxes(_root(covs), -1, -2)
    pa = np.stack([a.acc[e][ia] for e in evals]).astype(np.float32)                       # (E, s)
    pb = np.stack([np.stack([o.acc[e][ib] for e in evals]) for o in others]).astype(np.float32)   # (K, E, s)
    ra = _replicates(np.broadcast_to(pa, (k, *pa.shape)), z[..., :s], idx)
    rb = _replicates(pb, z[..., s:], idx)
    return ra, rb, matched


def paired(a: Runs, b: Runs, rng: np.random.Generator, a_fixed: bool = False, b_fixed: bool = False,
           b_reps: int = B) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Joint replicates of two methods' seed-mean accuracies on one dataset (`paired_many` with one other).
    Returns (reps_a, reps_b, info) with info = {"pairs": aligned runs, "matched": image-paired everywhere}."""
    ia, ib = align(a, b, a_fixed, b_fixed)
    evals = [e for e in a.evals if e in b.acc]
    if not len(ia) or not evals:
        return {}, {}, {"pairs": 0, "matched": False}
    ra, rb, matched = paired_many(a, [b], rng, ia, ib, evals, b_reps)
    return dict(zip(evals, ra[0])), dict(zip(evals, rb[0])), {"pairs": len(ia), "matched": matched[0]}


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
