"""Uncertainty: analytic intervals (crossed seeds × images), paired tie tests with Holm, grouped ranks, exact McNemar with one seed, and the acceptance trees
(A better than B by a known margin, C = B + noise; intervals shrink with more seeds and more test images)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bench.report import stats
from bench.report.aggregate import summaries
from bench.report.collect import load_results
from bench.report.leaderboard import write_leaderboard
from bench.report.pairwise import compare_methods
from bench.report.uncertainty import Stat, Uncertainty

try:
    from tests.result_fixtures import write_result
except ImportError:  # tests/ run as a rootdir without a package
    from result_fixtures import write_result

BB = ("ViT-B-16-quickgelu", "openai")
DATASETS = ("dtd", "eurosat")


def entry(method: str, shots: int = 16, protocol: str = "fewshot") -> tuple:
    return (*BB, protocol, method, shots)


def abc_tree(root: Path, n: int = 2000, seeds=(1, 2, 3), margin: float = 0.15, swaps: int = 30) -> Path:
    """A = B with a `margin` share of B's errors fixed (A better by ~margin·(1 − acc_B)); C = B with `swaps`
    right answers made wrong and about as many wrong ones made right (same accuracy up to noise)."""
    rng = np.random.default_rng(7)
    for d in DATASETS:
        for seed in seeds:
            b = rng.random(n) < 0.6 + 0.01 * seed                    # seeds differ a little
            a = b | (rng.random(n) < margin)
            c = b.copy()
            c[rng.choice(np.flatnonzero(b), swaps, replace=False)] = False
            c[rng.choice(np.flatnonzero(~b), swaps + int(rng.integers(-5, 6)), replace=False)] = True
            for m, right in (("A", a), ("B", b), ("C", c)):
                write_result(root, m, d, seed=seed, predictions={"all": right})
    return root


def test_holm_and_exact_pieces() -> None:
    # Holm at 0.05 over 4: sorted p 0.01 (≤ .0125 reject), 0.02 (≤ .0167 no → stop): only the first rejected.
    out = stats.holm({"a": 0.02, "b": 0.01, "c": 0.04, "d": 0.5})
    assert out["b"][1] and not out["a"][1] and not out["c"][1] and not out["d"][1]
    assert out["b"][0] == pytest.approx(0.04) and out["a"][0] == pytest.approx(0.06)
    assert out["d"][0] == pytest.approx(0.5)                     # adjusted p is monotone and capped at 1
    assert float(stats.mcnemar_exact(4, 0)) == pytest.approx(0.125)          # 2·(½)^4, not the large-sample 0.046
    assert float(stats.mcnemar_exact(10, 10)) == 1.0 and float(stats.mcnemar_exact(0, 0)) == 1.0
    lo, hi = stats.wilson(0.5, 100)
    assert (float(lo), float(hi)) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    from scipy.special import ndtri, stdtrit
    for nu in (1, 2, 5):                    # seed part only: Student's t with its df; image part only: normal
        only_seed = stats.Parts(np.array(4.0), np.array(float(nu)), np.array(0.0), np.array(np.inf), 3)
        assert float(stats.reference_quantile(only_seed)) == pytest.approx(2 * stdtrit(nu, 0.975), rel=2e-3)
        assert float(stats.reference_p(only_seed, 2 * stdtrit(nu, 0.975))) == pytest.approx(0.05, abs=5e-4)
    only_images = stats.Parts(np.array(0.0), np.array(np.inf), np.array(4.0), np.array(np.inf), 3)
    assert float(stats.reference_quantile(only_images)) == pytest.approx(2 * ndtri(0.975), rel=1e-4)


def test_moments_match_the_two_way_anova() -> None:
    """The mean squares of `moments` are those of the textbook two-way ANOVA without replication, and the
    variance of a seed mean is s²/S + (MS_image − MS_residual)/(S·N), its seed part floored at MS_residual/(S·N)
    (a seed variance component below 0 is 0)."""
    y = np.random.default_rng(4).random((1, 4, 50)) < np.linspace(0.2, 0.9, 50)
    m = stats.moments(y)
    x = y[0].astype(float)
    s, n = x.shape
    grand, rows, cols = x.mean(), x.mean(axis=1), x.mean(axis=0)
    ms_img = s * ((cols - grand) ** 2).sum() / (n - 1)
    ms_res = ((x - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((s - 1) * (n - 1))
    assert m.img[0, 0] == pytest.approx(ms_img) and m.res[0, 0] == pytest.approx(ms_res)
    parts = stats.variance([[(m, np.array([1.0]))]])
    seed_part = max(rows.var(ddof=1) / s, ms_res / (s * n))
    assert float(parts.total) == pytest.approx(seed_part + max(ms_img - ms_res, 0) / (s * n))
    assert float(parts.seed_df) == pytest.approx(s - 1)
    # a paired difference: moments of the pair with coefficients (1, −1) = moments of the difference table
    pair = np.concatenate([y, np.random.default_rng(5).random((1, 4, 50)) < 0.6])
    mp = stats.moments(pair[None])
    c = np.array([1.0, -1.0])
    d = pair[0].astype(float) - pair[1]
    cols = d.mean(axis=0)
    assert c @ mp.img[0] @ c == pytest.approx(s * ((cols - d.mean()) ** 2).sum() / (n - 1))


def test_acceptance_a_best_b_and_c_tied(tmp_path: Path) -> None:
    root = abc_tree(tmp_path)
    text = write_leaderboard(root, plots=False).read_text()
    assert f"{stats.TEST_NAME}, α = 0.05, Holm correction" in text
    few = text.split("### Average over 2 datasets")[1].split("###")[0]
    rows = {m: [c.strip() for c in line.strip("|").split("|")] for line in few.splitlines()
            for m in "ABC" if re.match(rf"\|\s*\d+\s*\|\s*{m}\s*\|", line)}
    assert rows["A"][0] == "1" and rows["A"][2].startswith("**")              # A is the best, bold
    assert rows["B"][0] == rows["C"][0] == "2"                                # B and C share the next rank
    assert "≈" not in rows["B"][2] + rows["C"][2]                             # neither is tied with A
    unc = Uncertainty(load_results(root).frame)
    stat = Stat.mean([(d, "all") for d in DATASETS])
    bc, ab = unc.compare(entry("B"), entry("C"), stat), unc.compare(entry("A"), entry("B"), stat)
    assert bc.lo < 0 < bc.hi and bc.p > 0.05 and bc.paired and bc.pairs == 3
    assert ab.lo > 0 and ab.p < 0.01 and ab.delta == pytest.approx(ab.a - ab.b)
    best, decision = unc.ties([entry(m) for m in "BC"], stat)                 # without A: B ≈ C
    assert len(decision) == 1 and next(iter(decision.values()))[1]


def test_known_margin_is_recovered(tmp_path: Path) -> None:
    root = abc_tree(tmp_path, n=4000)
    res = load_results(root)
    table = compare_methods(res.frame, "A", "B")
    avg = table[table["dataset"] == "average"].iloc[0]
    truth = res.completed.groupby("method")["acc"].mean()
    assert avg["delta"] == pytest.approx(truth["A"] - truth["B"])
    # paired on images: about 2 points wide with 3 seeds (their 2 degrees of freedom widen the seed part)
    assert avg["lo"] < avg["delta"] < avg["hi"] and avg["hi"] - avg["lo"] < 2.5 and avg["p"] < 0.01
    assert bool(avg["image_paired"]) and set(table["dataset"]) == {"dtd", "eurosat", "average"}


def _width(root: Path, method: str = "B") -> float:
    t = summaries(load_results(root))["fewshot_avg"].set_index("method")
    return float(t.loc[method, "acc_hi"] - t.loc[method, "acc_lo"])


def _seedy_tree(root: Path, n: int, seeds: int, sd: float = 0.02) -> Path:
    """One method whose seeds differ (by `sd`, ≈ 2 points) on n test images."""
    rng = np.random.default_rng(3)
    for d in DATASETS:
        for seed in range(1, seeds + 1):
            p = 0.6 + rng.normal(0, sd)
            write_result(root, "B", d, seed=seed, predictions={"all": rng.random(n) < p})
    return root


def test_intervals_shrink_with_more_seeds_and_more_images(tmp_path: Path) -> None:
    w_few_seeds = _width(_seedy_tree(tmp_path / "s3", 1000, 3))
    w_many_seeds = _width(_seedy_tree(tmp_path / "s12", 1000, 12))
    assert w_many_seeds < 0.75 * w_few_seeds
    w_few_images = _width(_seedy_tree(tmp_path / "n200", 200, 3, sd=0.0))     # seeds alike: images dominate
    w_many_images = _width(_seedy_tree(tmp_path / "n5000", 5000, 3, sd=0.0))
    assert w_many_images < 0.5 * w_few_images
    # with a real seed spread, more images cannot remove the seed part
    assert _width(_seedy_tree(tmp_path / "n5000s", 5000, 3)) > 2 * w_many_images


def test_intervals_are_deterministic_and_cover_the_mean(tmp_path: Path) -> None:
    root = abc_tree(tmp_path, n=500)
    a = summaries(load_results(root))["fewshot"]
    b = summaries(load_results(root))["fewshot"]
    assert a[["mean_lo", "mean_hi"]].equals(b[["mean_lo", "mean_hi"]])
    assert ((a["mean_lo"] < a["mean"]) & (a["mean"] < a["mean_hi"])).all()
    assert set(a["ci_basis"]) == {"seeds+images"}


def test_base2new_hm_and_average_intervals(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for d in DATASETS:
        for seed in (1, 2, 3, 4, 5):
            write_result(tmp_path, "coop", d, protocol="base2new", seed=seed,
                         predictions={"base": rng.random(800) < 0.8, "new": rng.random(700) < 0.6})
    t = summaries(load_results(tmp_path))
    avg, per = t["base2new_avg"].iloc[0], t["base2new"]
    for col in ("base", "new", "hm"):
        assert avg[f"{col}_lo"] < avg[col] < avg[f"{col}_hi"]
    assert ((per["hm_lo"] < per["hm"]) & (per["hm"] < per["hm_hi"])).all()
    # the average's interval is narrower than a dataset's (two independent datasets averaged)
    assert avg["hm_hi"] - avg["hm_lo"] < (per["hm_hi"] - per["hm_lo"]).mean()


def test_without_predictions_intervals_come_from_counts_and_seeds(tmp_path: Path) -> None:
    for seed, acc in ((1, 70.0), (2, 72.0), (3, 71.0)):
        write_result(tmp_path, "coop", "dtd", seed=seed, metrics={"all": acc})      # n = 1000, no npz
        write_result(tmp_path, "cocoop", "dtd", seed=seed, metrics={"all": acc + 0.1})
    t = summaries(load_results(tmp_path))["fewshot"].set_index("method")
    assert t.loc["coop", "ci_basis"] == "seeds+images" and t.loc["coop", "mean_lo"] < 71 < t.loc["coop", "mean_hi"]
    text = write_leaderboard(tmp_path, plots=False).read_text()
    assert "kept the seed pairing but took the two methods' images as uncorrelated" in text
    cmp = compare_methods(load_results(tmp_path).frame, "cocoop", "coop")
    assert not cmp["image_paired"].any() and np.allclose(cmp["delta"], 0.1)


def test_zero_shot_pairs_with_every_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    b = rng.random(1000) < 0.5
    write_result(tmp_path, "zeroshot", "dtd", shots=0, seed=1, predictions={"all": b})
    for seed in (1, 2, 3):
        write_result(tmp_path, "coop", "dtd", shots=4, seed=seed, predictions={"all": b | (rng.random(1000) < 0.1)})
    table = compare_methods(load_results(tmp_path).frame, "coop", "zeroshot")
    row = table.iloc[0]
    assert (row["shots"], row["seeds"], bool(row["image_paired"])) == (4, 3, True) and row["lo"] > 0


def test_shared_test_set_is_not_averaged_away(tmp_path: Path) -> None:
    """Seeds evaluated on the same images: identical seeds leave the test-set uncertainty of one seed (crossed
    design), and without predictions the seeds are taken as fully correlated (the conservative choice)."""
    right = np.random.default_rng(2).random(800) < 0.7
    for seed in (1, 2, 3):
        write_result(tmp_path / "same", "B", "dtd", seed=seed, predictions={"all": right})
    write_result(tmp_path / "one", "B", "dtd", seed=1, predictions={"all": right})
    for seed in (1, 2, 3):
        write_result(tmp_path / "old", "B", "dtd", seed=seed, metrics={"all": 70.0})
    widths = {}
    for name in ("same", "one", "old"):
        t = summaries(load_results(tmp_path / name))["fewshot"].iloc[0]
        widths[name] = t["mean_hi"] - t["mean_lo"]
    assert widths["same"] == pytest.approx(widths["one"], rel=0.1)          # 3 identical seeds = 1 seed
    assert widths["old"] > 0.9 * widths["one"]                               # n = 1000, seeds fully correlated


def test_cli_compare(tmp_path: Path, capsys) -> None:
    import argparse

    from bench.cli import compare
    from bench.errors import BenchError

    abc_tree(tmp_path, n=500)
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    assert compare.execute(parser.parse_args(["A", "B", "--results", str(tmp_path)])) == 0
    out = capsys.readouterr().out
    assert "A − B · ViT-B-16-quickgelu/openai · fewshot · K=16" in out and "95% CI" in out
    assert re.search(r"average\s+all\s+—\s+[\d.]+\s+[\d.]+\s+\+\d+\.\d\d\s+\[\+", out)    # A better: interval > 0
    assert re.search(r"dtd\s+all\s+500\s+\d+/0 \d+/0 \d+/0\s", out)        # images; per seed: A right / B right
    assert "Holm's step-down adjustment over all 3 rows" in out and "warning" not in out
    assert compare.execute(parser.parse_args(["A", "B", "--results", str(tmp_path), "--seeds", "1"])) == 0
    out = capsys.readouterr().out
    assert "exact McNemar" in out and "warning: 1 seed(s)" in out and "not the two methods" in out
    assert compare.execute(parser.parse_args(["B", "C", "--results", str(tmp_path), "--format", "csv",
                                              "--datasets", "dtd"])) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("backbone,pretrained,protocol,shots,dataset,eval,images,discordant") and "p_holm" in csv[0]
    with pytest.raises(BenchError, match="method 'D' has no completed result here; available: A, B, C"):
        compare.execute(parser.parse_args(["A", "D", "--results", str(tmp_path)]))


def test_one_seed_uses_exact_mcnemar_and_says_images_only(tmp_path: Path) -> None:
    """4 images only A gets right, none only B: exact McNemar p = 2·(½)^4 = 0.125 (the large-sample test said
    ≈ 0.04); the interval is image-only and labelled so."""
    b = np.random.default_rng(6).random(1000) < 0.7
    a = b.copy()
    a[np.flatnonzero(~b)[:4]] = True
    write_result(tmp_path, "A", "dtd", seed=1, predictions={"all": a})
    write_result(tmp_path, "B", "dtd", seed=1, predictions={"all": b})
    row = compare_methods(load_results(tmp_path).frame, "A", "B").iloc[0]
    assert row["p"] == pytest.approx(0.125) and row["discordant"] == "4/0" and row["test"] == "exact McNemar"
    assert row["lo"] < 0.4 < row["hi"] and row["images"] == 1000
    t = summaries(load_results(tmp_path))["fewshot"]
    assert set(t["ci_basis"]) == {"images"}


def test_linear_many_equals_one_call_per_statistic() -> None:
    """The vectorised path (a column's comparisons, a table's intervals) gives what one call per statistic gives:
    statistics of different shapes (seeds, images, one-seed McNemar pairs, two-dataset blocks) mixed in one list."""
    gen = np.random.default_rng(5)
    items = []
    for s, n, k in [(3, 400, 2), (3, 400, 2), (1, 300, 2), (1, 300, 2), (3, 400, 1), (5, 200, 2), (3, 400, 2)]:
        y = gen.random((k, s, n)) < gen.uniform(0.5, 0.9, (k, 1, 1))
        m = stats.moments(y)
        c = np.array([1.0, -1.0]) if k == 2 else np.array([1.0])
        point = float(m.acc.mean(axis=-1) @ c)
        if s == 5:                                   # an average of two datasets on the same seeds
            m2 = stats.moments(gen.random((k, s, n)) < 0.7)
            items.append(([[(m, c / 2), (m2, c / 2)]], point / 2 + float(m2.acc.mean(axis=-1) @ c) / 2))
        else:
            items.append(([[(m, c)]], point))
    many = stats.linear_many(items)
    for (blocks, point), got in zip(items, many):
        one = stats.linear(blocks, point)
        assert got.basis == one.basis
        for f in ("value", "se", "df", "lo", "hi", "p"):
            assert np.isclose(getattr(got, f), getattr(one, f), rtol=1e-9, atol=1e-12, equal_nan=True), f
