"""Calibration of bench's intervals and tests (bench/report/stats.py) on simulated per-image outcomes of known truth.

Usage:
    $ .venv/bin/python benchmarks/calibration.py                 # default grid, 500 replicates per cell (about 3 minutes on 2 cores)
    $ .venv/bin/python benchmarks/calibration.py --reps 200      # quicker, coarser
    $ .venv/bin/python benchmarks/calibration.py --tables coverage,fpr
    $ .venv/bin/python benchmarks/calibration.py --tables bound,pooled   # the power question (about 30 s)

The world: method m, seed s, test image i is right with probability σ(θ_m + b_i + c_mi + g_s + h_ms): image
difficulty b (SD 2.5 on the logit scale), a method effect per image c (SD 1), a seed effect shared by the methods
g and one per method h (half of the seed variance each; their SD is set so that one method's per-seed accuracy
varies by the stated seed SD in points), and run noise (the Bernoulli draw). Every replicate draws a new test set
from the image population and new seeds; the truth is the expected accuracy over both (a one-dimensional
Gauss–Hermite integral), so an interval covers when it contains it. Two base-to-new evaluations share their
seed effects (HM); three datasets of an average have seed effects correlated 0.5. Printed: coverage of the 95 %
interval of an accuracy, an HM and a 3-dataset average; the false-positive rate of the paired test for two
identical methods at α = 0.05; its power for a 2-point difference. `bound`: the most power any test on one
comparison can have at 3 seeds while keeping its false-positive rate ≤ 5 % at every seed SD (a linear programme,
`power_bound`). `pooled`: a leaderboard column of 11 datasets on the same seeds, bench's test against the
candidate that pools the seed part over the column (`pool_seed`), with equal and with different seed spreads.
tests/test_calibration.py runs a small grid.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import stats  # noqa: E402

SD_IMAGE, SD_METHOD_IMAGE = 7.0, 1.0     # two seeds agree on ~92 % of images, two methods on ~91 %
SHARED = 0.5                       # share of the seed variance shared by the methods
SEEDS = (1, 2, 3, 5, 10)
SEED_SDS = (0.0, 1.0, 2.0, 3.0, 6.0)
CHUNK = 4_000_000                  # simulated outcomes per batch (memory)
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(120)


def expected(theta, sd: float):
    """E σ(θ + sd·Z), Z standard normal (elementwise in θ)."""
    theta = np.asarray(theta, dtype=np.float64)
    out = (_WEIGHTS * _sigmoid(theta[..., None] + sd * _NODES)).sum(axis=-1) / np.sqrt(2 * np.pi)
    return float(out) if out.ndim == 0 else out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def theta_for(acc: float, sd: float) -> float:
    """θ with E σ(θ + sd·Z) = acc (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected(mid, sd) < acc else (lo, mid)
    return (lo + hi) / 2


def logit_seed_sd(acc: float, points: float) -> float:
    """Logit-scale SD of the seed effect that moves one method's accuracy by `points` (SD, in points):
    points/100 divided by the mean slope E σ'(θ + b + c)."""
    if points <= 0:
        return 0.0
    sd = np.hypot(SD_IMAGE, SD_METHOD_IMAGE)
    th = theta_for(acc, sd)
    slope = float(np.sum(_WEIGHTS * _sigmoid(th + sd * _NODES) * (1 - _sigmoid(th + sd * _NODES))) / np.sqrt(2 * np.pi))
    return points / 100.0 / slope


class World:
    """Simulated evaluations: `draw(rng, reps)` → right/wrong (reps, methods, S, N) for methods with accuracies
    `accs` (fractions, the truth) on one evaluation; `seed` gives the seed effects to reuse across evaluations."""

    def __init__(self, accs, seeds: int, images: int, seed_sd_points: float):
        self.accs, self.s, self.n = list(accs), seeds, images
        self.sd_seed = logit_seed_sd(float(np.mean(accs)), seed_sd_points)
        total = np.sqrt(SD_IMAGE ** 2 + SD_METHOD_IMAGE ** 2 + self.sd_seed ** 2)
        self.theta = np.array([theta_for(a, total) for a in self.accs], dtype=np.float32)

    def seed_effects(self, rng: np.random.Generator, reps: int) -> np.ndarray:
        """(reps, methods, S) logit seed effects: a shared part and one per method."""
        g = rng.standard_normal((reps, 1, self.s)) * np.sqrt(SHARED)
        h = rng.standard_normal((reps, len(self.accs), self.s)) * np.sqrt(1 - SHARED)
        return ((g + h) * self.sd_seed).astype(np.float32)

    def run_truth(self, seed_effects: np.ndarray) -> np.ndarray:
        """(reps, methods, S) expected accuracy of each run over the image population, given its seed effect
        (the estimand of a one-seed, image-only interval)."""
        return expected(self.theta[None, :, None] + seed_effects, float(np.hypot(SD_IMAGE, SD_METHOD_IMAGE)))

    def draw(self, rng: np.random.Generator, reps: int, seed_effects: np.ndarray | None = None) -> np.ndarray:
        k = len(self.accs)
        eff = self.seed_effects(rng, reps) if seed_effects is None else seed_effects
        b = rng.standard_normal((reps, 1, 1, self.n), dtype=np.float32) * SD_IMAGE
        c = rng.standard_normal((reps, k, 1, self.n), dtype=np.float32) * SD_METHOD_IMAGE
        logit = self.theta[None, :, None, None] + b + c + eff[..., None]
        return rng.random(logit.shape, dtype=np.float32) < _sigmoid(logit)


def _batches(reps: int, per: int):
    size = max(1, CHUNK // max(per, 1))
    for start in range(0, reps, size):
        yield min(size, reps - start)


def coverage_mean(rng, seeds, images, seed_sd, acc, reps) -> float:
    """Share of replicates whose interval of one method's accuracy contains the truth (with one seed: that
    run's expected accuracy over images, what an image-only interval is about)."""
    w, hits = World([acc], seeds, images, seed_sd), 0
    for r in _batches(reps, seeds * images):
        eff = w.seed_effects(rng, r)
        m = stats.moments(w.draw(rng, r, eff))
        truth = w.run_truth(eff)[:, 0, 0] if seeds == 1 else acc
        est = stats.linear([[(m, np.ones((r, 1)))]], m.acc[:, 0].mean(axis=-1))
        hits += int(np.sum((est.lo <= truth) & (truth <= est.hi)))
    return hits / reps


def coverage_hm(rng, seeds, images, seed_sd, reps, base=0.80, new=0.70) -> float:
    """Coverage of the HM interval (Base and New on their own test sets, the same seeds), delta method."""
    wb, wn = World([base], seeds, images, seed_sd), World([new], seeds, images, seed_sd)
    truth, hits = float(stats.hm(base, new)), 0
    for r in _batches(reps, 2 * seeds * images):
        eff = wb.seed_effects(rng, r)
        mb, mn = stats.moments(wb.draw(rng, r, eff)), stats.moments(wn.draw(rng, r, eff))
        pb, pn = mb.acc[:, 0].mean(axis=-1), mn.acc[:, 0].mean(axis=-1)
        gb, gn = stats.hm_gradient(pb, pn)
        est = stats.linear([[(mb, gb[:, None]), (mn, gn[:, None])]], stats.hm(pb, pn))
        if seeds == 1:
            truth = stats.hm(wb.run_truth(eff)[:, 0, 0], wn.run_truth(eff)[:, 0, 0])
        hits += int(np.sum((est.lo <= truth) & (truth <= est.hi)))
    return hits / reps


def coverage_average(rng, seeds, images, seed_sd, reps, accs=(0.5, 0.7, 0.9), corr=0.5) -> float:
    """Coverage of the interval of a 3-dataset average (seed effects correlated `corr` across datasets)."""
    worlds = [World([a], seeds, images, seed_sd) for a in accs]
    truth, hits = float(np.mean(accs)), 0
    for r in _batches(reps, len(accs) * seeds * images):
        common = worlds[0].seed_effects(rng, r) / max(worlds[0].sd_seed, 1e-12)
        parts, runs = [], []
        for w in worlds:
            own = w.seed_effects(rng, r) / max(w.sd_seed, 1e-12)
            eff = (np.sqrt(corr) * common + np.sqrt(1 - corr) * own) * w.sd_seed
            parts.append(stats.moments(w.draw(rng, r, eff.astype(np.float32))))
            runs.append(w.run_truth(eff)[:, 0, 0])
        if seeds == 1:
            truth = np.mean(runs, axis=0)
        point = np.mean([m.acc[:, 0].mean(axis=-1) for m in parts], axis=0)
        est = stats.linear([[(m, np.full((r, 1), 1 / len(accs))) for m in parts]], point)
        hits += int(np.sum((est.lo <= truth) & (truth <= est.hi)))
    return hits / reps


def paired(rng, seeds, images, seed_sd, reps, acc=0.80, delta=0.0, alpha=stats.ALPHA) -> tuple[float, float]:
    """(share of replicates where the paired test rejects 'A = B' at alpha, coverage of the Δ interval) for
    A = B + delta (fractions) on the same seeds and images."""
    w = World([acc + delta, acc], seeds, images, seed_sd)
    rejected = covered = 0
    for r in _batches(reps, 2 * seeds * images):
        eff = w.seed_effects(rng, r)
        m = stats.moments(w.draw(rng, r, eff))
        truth = delta
        if seeds == 1:                   # one seed: the interval is about these two runs
            t = w.run_truth(eff)[:, :, 0]
            truth = t[:, 0] - t[:, 1]
        point = m.acc[:, 0].mean(axis=-1) - m.acc[:, 1].mean(axis=-1)
        est = stats.linear([[(m, np.tile([1.0, -1.0], (r, 1)))]], point)
        rejected += int(np.sum(est.p < alpha))
        covered += int(np.sum((est.lo <= truth) & (truth <= est.hi)))
    return rejected / reps, covered / reps


def oracle(rng, seeds, images, seed_sd, reps, acc=0.80, delta=0.0, alpha=stats.ALPHA) -> float:
    """Rejection rate of the paired t test over images of the seed-averaged difference (df N − 1): exact without
    seed effects, blind to them otherwise."""
    from scipy.special import stdtr

    w, rejected = World([acc + delta, acc], seeds, images, seed_sd), 0
    for r in _batches(reps, 2 * seeds * images):
        y = w.draw(rng, r).astype(np.float32)
        d = (y[:, 0] - y[:, 1]).mean(axis=1)                                     # (r, N)
        t = d.mean(axis=-1) / (d.std(axis=-1, ddof=1) / np.sqrt(images) + 1e-300)
        rejected += int(np.sum(2 * stdtr(images - 1, -np.abs(t)) < alpha))
    return rejected / reps


def pool_seed(parts: stats.Parts) -> stats.Parts:
    """The candidate that borrows strength across a column (last axis: its datasets, run with the same seeds):
    the seed part is assumed to be the same multiple r of its residual share (`least`) on every dataset;
    r̂ = Σ ν·(seed/least) / Σ ν, with Σ ν degrees of freedom instead of S − 1."""
    nu = np.where(np.isfinite(parts.seed_df), parts.seed_df, 0.0)
    least = np.asarray(parts.least, dtype=np.float64)
    r = (nu * parts.seed / least).sum(axis=-1, keepdims=True) / nu.sum(axis=-1, keepdims=True)
    df = np.broadcast_to(nu.sum(axis=-1, keepdims=True), nu.shape)
    return stats.Parts(r * least, df, parts.image, parts.image_df, parts.seeds, least)


def column(rng, seeds, images, seed_sds, reps, delta=0.0, alpha=stats.ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """A leaderboard column: len(seed_sds) datasets (accuracies 55–90 %) run on the same seeds, each with its own
    seed SD (points), two methods A = B + delta. Rejection rate per dataset at alpha: (bench's test on the
    dataset alone, the test with the seed part pooled over the column by `pool_seed`)."""
    accs = np.linspace(0.55, 0.90, len(seed_sds))
    worlds = [World([a + delta, a], seeds, images, sd) for a, sd in zip(accs, seed_sds)]
    own, pooled = np.zeros(len(worlds)), np.zeros(len(worlds))
    for r in _batches(reps, 2 * seeds * images * len(worlds)):
        parts, points = [], []
        for w in worlds:
            m = stats.moments(w.draw(rng, r))
            parts.append(stats.variance([[(m, np.tile([1.0, -1.0], (r, 1)))]]))
            points.append(m.acc[:, 0].mean(axis=-1) - m.acc[:, 1].mean(axis=-1))
        stack = stats.Parts(*(np.stack([getattr(p, f) for p in parts], axis=-1) for f in
                              ("seed", "seed_df", "image", "image_df")), seeds, np.stack([p.least for p in parts], -1))
        point = np.stack(points, axis=-1)
        own += (stats.reference_p(stack, point) < alpha).sum(axis=0)
        pooled += (stats.reference_p(pool_seed(stack), point) < alpha).sum(axis=0)
    return own / reps, pooled / reps


def power_bound(seeds: int, images: int = 1000, delta: float = 0.02, alpha: float = stats.ALPHA) -> tuple[float, float]:
    """(bound, z) — the most power any test on one comparison can have at no seed effect while its false-positive rate stays
    ≤ alpha at every seed variance. Normal model of a paired difference: Δ̂ ~ N(δ, τ² + I), the seed part
    W ~ τ²·χ²_k/k (k = S − 1) with τ² ≥ L, its residual share, and L, I (image part) known (their degrees of
    freedom are in the thousands). The rejection region in (|Δ̂|, W) is a linear programme: maximise the power
    at τ² = L subject to size ≤ alpha at 60 values of τ²/L from 1 to 10⁵ (Neyman–Pearson over a discretised
    plane). L, I and δ/√(L + I) are the simulation's (medians over 200 replicates of the 2-point difference).
    z: the power of the z test that knows there is no seed effect (τ² = L), the ceiling of any test."""
    from scipy.optimize import linprog
    from scipy.stats import chi2, norm

    w = World([0.80 + delta, 0.80], seeds, images, 0.0)
    m = stats.moments(w.draw(np.random.default_rng(0), 200))
    p = stats.variance([[(m, np.tile([1.0, -1.0], (200, 1)))]])
    beta, effect = float(np.median(p.image / p.least)), float(delta / np.median(np.sqrt(p.least + p.image)))
    k = seeds - 1
    w_edges = np.concatenate([[0], np.geomspace(0.01, 2000, 90), [np.inf]])          # W / L
    z_edges = np.concatenate([[0], np.geomspace(0.05, 200, 140), [np.inf]])          # |Δ̂| / √(L + I)

    def cells(ratio: float, mean: float) -> np.ndarray:
        sd = np.sqrt((ratio + beta) / (1 + beta))
        pz = np.diff(norm.cdf(z_edges, mean, sd) - norm.cdf(-z_edges, mean, sd))
        return np.outer(np.diff(chi2.cdf(w_edges * k / ratio, k)), pz).ravel()

    ratios = np.geomspace(1, 1e5, 60)
    best = linprog(-cells(1.0, effect), A_ub=np.array([cells(r, 0.0) for r in ratios]),
                   b_ub=np.full(len(ratios), alpha), bounds=(0, 1), method="highs")
    z = norm.ppf(1 - alpha / 2)
    return float(-best.fun), float(norm.sf(z - effect) + norm.cdf(-z - effect))


TABLES = ("coverage", "images", "hm", "average", "delta", "fpr", "power", "oracle", "bound", "pooled")


def run(tables=TABLES, reps: int = 500, seeds=SEEDS, seed_sds=SEED_SDS, rng_seed: int = 0, out=print) -> dict:
    """Print the tables; returns {table: {(row, column): value}}."""
    rng = np.random.default_rng(rng_seed)
    results: dict[str, dict] = {}
    grids = {
        "coverage": ("coverage of the 95% interval of one method's accuracy (80 %, 1,000 images)",
                     lambda sd, s: coverage_mean(rng, s, 1000, sd, 0.80, reps)),
        "hm": ("coverage of the 95% HM interval (Base 80 %, New 70 %, 1,000 images each)",
               lambda sd, s: coverage_hm(rng, s, 1000, sd, reps)),
        "average": ("coverage of the 95% interval of a 3-dataset average (50/70/90 %, 1,000 images each)",
                    lambda sd, s: coverage_average(rng, s, 1000, sd, reps)),
        "fpr": ("false-positive rate of the paired test, identical methods, α = 0.05 (80 %, 1,000 images; S=1: "
                "exact McNemar, only without seed effects — one seed cannot tell a method from its seed)",
                lambda sd, s: paired(rng, s, 1000, sd, reps)[0] if s > 1 or sd == 0 else float("nan")),
        "power": ("power of the paired test for a 2-point difference (82 vs 80 %, 1,000 images), α = 0.05",
                  lambda sd, s: paired(rng, s, 1000, sd, reps, delta=0.02)[0] if s > 1 or sd == 0 else float("nan")),
        "delta": ("coverage of the 95% interval of a paired difference (82 vs 80 %, 1,000 images; S=1: of the two "
                  "runs' difference)", lambda sd, s: paired(rng, s, 1000, sd, reps, delta=0.02)[1]),
        "oracle": ("for comparison, the per-image paired t test (seed means per image; ignores seed variance): "
                   "false positives, identical methods", lambda sd, s: oracle(rng, s, 1000, sd, reps)),
    }
    for name in tables:
        t0 = time.perf_counter()
        if name == "images":
            cells = {}
            title = "coverage of one method's accuracy interval across test-set size and accuracy (seed SD 2 points)"
            rows, cols = (200, 1000, 10000, 50000), (0.2, 0.5, 0.8, 0.95)
            for n in rows:
                for s in (1, 3):
                    for a in cols:
                        cells[(f"{n} images, S={s}", f"{a:.0%}")] = coverage_mean(
                            rng, s, n, 2.0, a, max(200, reps * 1000 // max(n, 1000)))
            _print(out, title, cells, [f"{n} images, S={s}" for n in rows for s in (1, 3)], [f"{a:.0%}" for a in cols])
        elif name == "bound":
            title = ("power for a 2-point difference at no seed effect (1,000 images): the best any test on one "
                     "comparison can do with FPR ≤ 5 % at every seed SD (LP bound), bench's test, and the z test that knows seeds agree")
            cells, rows = {}, ["best level-5% test", "bench's test", "z test, no seed effect known"]
            for s in [s for s in seeds if s > 1]:
                cells[(rows[0], f"S={s}")], cells[(rows[2], f"S={s}")] = power_bound(s)
                cells[(rows[1], f"S={s}")] = paired(rng, s, 1000, 0.0, reps, delta=0.02)[0]
            _print(out, title, cells, rows, [f"S={s}" for s in seeds if s > 1])
        elif name == "pooled":
            title = ("a column of 11 datasets on the same 3 seeds, 1,000 images each: rejection rate of bench's test "
                     "(own) and with the seed part pooled over the column (pooled)")
            cells, rows = {}, []
            for label, sds in [(f"all seed SD {sd:g}", [sd] * 11) for sd in seed_sds] + \
                              [("seed SD 0–6 (0.6 apart)", list(np.linspace(0, 6, 11)))]:
                fpr = column(rng, 3, 1000, sds, reps)
                power = column(rng, 3, 1000, sds, reps, delta=0.02)
                for i, how in enumerate(("own", "pooled")):
                    cells[(label, f"FPR {how}")] = float(fpr[i].max()) if len(set(sds)) > 1 else float(fpr[i].mean())
                    cells[(label, f"power {how}")] = float(power[i].mean())
                rows.append(label)
            cols = ["FPR own", "FPR pooled", "power own", "power pooled"]
            _print(out, title + " (FPR: mean over the datasets; in the mixed column, the worst dataset's)", cells,
                   rows, cols)
        else:
            title, fn = grids[name]
            cells = {(f"seed SD {sd:g}", f"S={s}"): fn(sd, s) for sd in seed_sds for s in seeds}
            _print(out, title, cells, [f"seed SD {sd:g}" for sd in seed_sds], [f"S={s}" for s in seeds])
        out(f"({time.perf_counter() - t0:.0f} s)\n")
        results[name] = cells
    return results


def _print(out, title: str, cells: dict, rows: list[str], cols: list[str]) -> None:
    width, cw = max(len(r) for r in rows), [max(9, len(c) + 2) for c in cols]
    out(f"{title}\n" + " " * width + "".join(f"{c:>{w}}" for c, w in zip(cols, cw)))
    for r in rows:
        out(f"{r:<{width}}" + "".join(f"{100 * cells[(r, c)]:{w - 1}.1f}%" if cells[(r, c)] == cells[(r, c)]
                                      else f"{'—':>{w}}" for c, w in zip(cols, cw)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=500, help="replicates per cell (500)")
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated subset of {','.join(TABLES)}")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulation (0)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    run([t for t in args.tables.split(",") if t], args.reps, rng_seed=args.seed)
    print(f"total {time.perf_counter() - t0:.0f} s, {args.reps} replicates per cell, seed {args.seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
