"""LEADERBOARD.md: layout, conventions, reported reference rows with Δ, plots, csv/json outputs, shipped YAML."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.report.aggregate import harmonic_mean, summaries
from bench.report.collect import load_results
from bench.report.leaderboard import write_leaderboard
from bench.report.reported import compare, load_reported, match

try:
    from tests.result_fixtures import plan_cell, write_result, write_sweep
except ImportError:  # tests/ run as a rootdir without a package
    from result_fixtures import plan_cell, write_result, write_sweep

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
REPORTED = """\
protocol: base2new
backbone: ViT-B-16
pretrained: openai
shots: 16
average_over: [dtd, eurosat]
entries:
  - {method: coop, title: CoOp, dataset: average, metrics: {base: 80.0, new: 60.0, hm: 68.57},
     verified: true, mark: VERIFIED, provenance: "test paper"}
  - {method: cocoop, title: CoCoOp, dataset: average, metrics: {base: 79.0, new: 70.0, hm: 74.23},
     verified: false, mark: 3RD-PARTY, provenance: "someone's README"}
  - {method: maple, title: MaPLe, dataset: average, metrics: {base: 82.0, new: 75.0, hm: 78.34},
     verified: true, mark: VERIFIED, provenance: "not run here"}
"""
B2N = {  # method -> dataset -> seed -> (base, new)
    "coop": {"dtd": {1: (80, 58), 2: (82, 60), 3: (84, 62)}, "eurosat": {1: (90, 50), 2: (88, 52)}},
    "cocoop": {"dtd": {1: (78, 66), 2: (78, 68), 3: (78, 70)}, "eurosat": {1: (85, 70), 2: (85, 72), 3: (85, 74)}},
    "clipfit": {"dtd": {1: (81, 69), 2: (83, 71)}, "eurosat": {1: (86, 72), 2: (86, 72), 3: (86, 72)}},
}


def make_tree(root: Path) -> Path:
    plan = []
    for method, per in B2N.items():
        for dataset, seeds in per.items():
            for seed in (1, 2, 3):
                plan.append(plan_cell(method, dataset, "base2new", 16, seed))
                if seed in seeds:
                    b, n = seeds[seed]
                    write_result(root, method, dataset, protocol="base2new", seed=seed, metrics={"base": b, "new": n})
    write_result(root, "clipfit", "dtd", protocol="base2new", seed=3, status="failed")
    for dataset, (b, n) in (("dtd", (60, 65)), ("eurosat", (55, 70))):
        plan.append(plan_cell("zeroshot", dataset, "base2new", 0, 1))
        write_result(root, "zeroshot", dataset, protocol="base2new", shots=0, seed=1, metrics={"base": b, "new": n},
                     device="cpu", train_s=0.0)
    for k in (1, 4):
        for dataset in ("dtd", "eurosat"):
            for seed in (1, 2, 3):
                plan.append(plan_cell("coop", dataset, "fewshot", k, seed))
                write_result(root, "coop", dataset, shots=k, seed=seed, metrics={"all": 50 + 5 * k + seed})
    for seed in (1, 2, 3):      # unplanned, and only on one dataset: "—" for EuroSAT, "*" on the average
        write_result(root, "cocoop", "dtd", shots=1, seed=seed, metrics={"all": 40.0 + seed})
    write_sweep(root, plan)
    (root / "reported").mkdir()
    (root / "reported" / "b2n.yaml").write_text(REPORTED)
    return root


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> tuple[Path, str]:
    root = make_tree(tmp_path_factory.mktemp("results"))
    out = write_leaderboard(root, now=NOW)
    return root, out.read_text()


_CI = re.compile(r" \[[-+]?\d+\.\d, [-+]?\d+\.\d(, 1 seed)?\]")


def _row(text: str, first_cells: str, ci: bool = False) -> list[str]:
    """The cells of the first table row whose leading cells match `first_cells` (regex on the joined text);
    without `ci`, each cell's 95 % interval ' [lo, hi]' is left out."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first_cells, " | ".join(cells[:2])):
            return cells if ci else [_CI.sub("", c) for c in cells]
    raise AssertionError(f"no row {first_cells!r}")


def test_header_and_sections(board) -> None:
    root, text = board
    assert (root / "LEADERBOARD.md").is_file()
    assert text.startswith("# CLIP fine-tuning leaderboard\n")
    assert re.search(r"_Generated 2026-01-02T03:04:05Z by bench v0\.1\.0 \(git \w+\) · backbone ViT-B-16-quickgelu/openai · "
                     r"seeds 1,2,3 · runs 30/32 complete, 1 failed, 1 missing_", text)
    assert "## Base-to-new generalisation — ViT-B-16-quickgelu/openai, 16 shots, 2-dataset average" in text
    assert re.search(r"\|\s*Rank\s*\|\s*Method\s*\|\s*Base\s*\|\s*New\s*\|\s*HM\s*\|\s*ΔHM vs zero-shot\s*\|"
                     r"\s*Trainable params\s*\|\s*Cost\s*\|\s*Runs\s*\|", text)
    for heading in ("### HM per dataset", "#### DTD", "#### EuroSAT", "## Few-shot classification",
                    "### Average over 2 datasets", "### K = 1", "### K = 4", "## Cost", "## Run status",
                    "### Failed cells (not averaged)", "### Missing cells (planned, no result yet)", "## Notes"):
        assert heading in text, heading


def test_ranking_hm_conventions_and_bold(board) -> None:
    _, text = board
    # clipfit dtd: seeds 1,2 only (seed 3 failed) → Base 82, New 70; eurosat 86/72.
    hm_clipfit = harmonic_mean((82 + 86) / 2, (70 + 72) / 2)
    hm_cocoop = harmonic_mean((78 + 85) / 2, (68 + 72) / 2)
    hm_zs = harmonic_mean(57.5, 67.5)
    first = _row(text, r"1 \| CLIPFit")
    assert first[4] == f"**{hm_clipfit:.2f}**\\*"                   # best HM bold, * = a seed missing (failed)
    assert first[5] == f"**{hm_clipfit - hm_zs:+.2f}**"
    assert first[8] == "5/6"
    second = _row(text, r"1 \| CoCoOp")           # no predictions here: intervals wide enough to tie with CLIPFit
    assert second[4] == f"{hm_cocoop:.2f} ≈" and second[8] == "6/6" and "\\*" not in "".join(second)
    assert _row(text, r"\d \| Zero-shot CLIP")[5] == "—"
    assert _row(text, r"\d \| CoOp")[4].endswith("\\*")               # eurosat seed 3 missing


def test_reported_rows_delta_and_dagger(board) -> None:
    root, text = board
    coop_base, coop_new = (82 + 89) / 2, (60 + 51) / 2
    coop_hm = harmonic_mean(coop_base, coop_new)
    ref = _row(text, r" \| CoOp \(reported\)")
    assert ref[2:5] == ["80.00", "60.00", "68.57"]
    assert ref[-1] == f"{coop_base - 80:+.2f} / {coop_new - 60:+.2f} / {coop_hm - 68.57:+.2f}"
    assert _row(text, r" \| CoCoOp \(reported\)†")[4] == "74.23"       # unverified → dagger
    assert _row(text, r" \| MaPLe \(reported\)")[-1] == "not run here"
    assert "† = not verified" in text and "someone's README" in text
    cmp = compare(summaries(load_results(root)), load_reported(root))
    hm = cmp[(cmp["method"] == "coop") & (cmp["eval"] == "hm")].iloc[0]
    assert hm["delta"] == pytest.approx(hm["reproduced"] - hm["reported"])
    assert hm["reproduced"] == pytest.approx(coop_hm) and bool(hm["verified"])


def test_footnotes_state_conventions(board) -> None:
    _, text = board
    assert "ddof=1" in text
    assert "HM(average Base, average New)" in text and "69.34/74.22 → 71.70" in text
    assert "\\* fewer runs than planned" in text and "— no completed run" in text


def test_fewshot_tables_and_missing_dash(board) -> None:
    _, text = board
    k1 = [(50 + 5 + s) for s in (1, 2, 3)]
    few = text.split("## Few-shot classification")[1]
    avg_row = _row(few, r"\d \| CoOp")
    assert avg_row[2] == f"**{sum(k1) / 3:.2f} ± 1.00**"               # K=1 average over datasets, sample std
    lines = few.split("### K = 4")[1].split("##")[0]
    assert "CoOp" in lines and "CoCoOp" not in lines and re.search(r"\|\s*\*\*Avg\*\*\s*\|", lines)
    k1 = few.split("### K = 1")[1].split("##")[0]
    assert _row(k1, r"CoCoOp \| .*") == ["CoCoOp", "42.00 ± 1.00", "—", "42.00\\*"]
    assert _row(few, r"— \| CoCoOp")[2] == "42.00 ± 1.00\\*"    # average table: a dataset is missing; no K=4: no rank


def test_failed_and_missing_listed(board) -> None:
    _, text = board
    status = text.split("## Run status")[1]
    assert re.search(r"\|\s*clipfit\s*\|\s*dtd\s*\|\s*base2new\s*\|\s*16\s*\|\s*3\s*\|\s*RuntimeError", status)
    assert re.search(r"\|\s*coop\s*\|\s*eurosat\s*\|\s*base2new\s*\|\s*16\s*\|\s*3\s*\|", status)


def test_plots_written_and_linked(board) -> None:
    root, text = board
    pngs = sorted(p.name for p in (root / "plots").glob("*.png"))
    assert pngs == ["base2new-ViT-B-16-quickgelu-openai.png", "fewshot_avg-ViT-B-16-quickgelu-openai.png",
                    "fewshot_datasets-ViT-B-16-quickgelu-openai.png"]
    for name in pngs:
        assert (root / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{name})" in text


def test_json_and_csv_outputs(board, tmp_path: Path) -> None:
    root, _ = board
    doc = json.loads(write_leaderboard(root, tmp_path / "lb.json", "json", now=NOW).read_text())
    assert doc["generated"] == "2026-01-02T03:04:05Z" and doc["completeness"]["failed"] == 1
    avg = {r["method"]: r for r in doc["tables"]["base2new_avg"]}
    assert avg["cocoop"]["hm"] == pytest.approx(harmonic_mean(81.5, 70))
    assert any(r["method"] == "coop" and r["eval"] == "hm" for r in doc["reported"])
    csv = write_leaderboard(root, tmp_path / "lb.csv", "csv").read_text()
    assert csv.splitlines()[0].startswith("backbone,") and ",base2new_avg" in csv and ",reported" in csv
    with pytest.raises(BenchError, match="format 'xml'"):
        write_leaderboard(root, fmt="xml")


def test_cli_leaderboard_no_plots(tmp_path: Path) -> None:
    from bench.cli import leaderboard
    root = tmp_path / "r"
    root.mkdir()
    write_result(root, "coop", "dtd", shots=4, metrics={"all": 70.0})
    parser = argparse.ArgumentParser()
    leaderboard.add_arguments(parser)
    assert leaderboard.execute(parser.parse_args([str(root), "--no-plots"])) == 0
    text = (root / "LEADERBOARD.md").read_text()
    assert "## Few-shot classification" in text and "## Plots" not in text and not (root / "plots").exists()


def test_shipped_reported_numbers() -> None:
    entries = load_reported(dirs=[Path(__file__).resolve().parents[1] / "results" / "reported"])
    avg = match(entries, protocol="base2new", backbone="ViT-B-16-quickgelu", pretrained="openai", dataset="average", shots=16)
    assert (avg["zeroshot"].metrics["base"], avg["zeroshot"].metrics["new"]) == (69.34, 74.22)
    assert round(harmonic_mean(69.34, 74.22), 2) == avg["zeroshot"].metrics["hm"] == 71.70
    assert round(harmonic_mean(82.69, 63.22), 2) == avg["coop"].metrics["hm"]
    assert {m for m, e in avg.items() if e.verified} == {"zeroshot", "coop", "cocoop", "maple", "kgcoop", "promptsrc"}
    assert (avg["promptsrc"].metrics["hm"], avg["kgcoop"].metrics["hm"]) == (79.97, 77.00)
    assert avg["clipfit"].mark == "DERIVED" and avg["clipfit"].metrics["base"] is None
    assert avg["prograd"].mark == "3RD-PARTY" and "conflict" in avg["prograd"].note
    per = [e for e in entries if e.protocol == "base2new" and e.dataset != "average"]
    assert len(per) == 33 and all(e.mark == "RECALL" and not e.verified for e in per)
    for e in per:   # the reference's consistency check: every per-dataset HM recomputes from its Base/New
        assert harmonic_mean(e.metrics["base"], e.metrics["new"]) == pytest.approx(e.metrics["hm"], abs=0.011)
    few = match(entries, protocol="fewshot", backbone="ViT-B-16-quickgelu", pretrained="openai", dataset="average", shots=16)
    assert few["lora"].metrics["all"] == 82.89 and not any(e.verified for e in few.values())
    dg = [e for e in entries if e.protocol == "dg"]
    assert {e.method for e in dg} == {"zeroshot", "coop", "cocoop"} and all(e.mark == "RECALL" for e in dg)


def test_reported_yaml_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("protocol: base2new\nbackbone: ViT-B-16\npretrained: openai\nshots: 16\n"
                                       "entries:\n  - {method: coop, dataset: average, metrics: {hm: 1},"
                                       " verified: true, mark: RECALL, provenance: x}\n")
    with pytest.raises(BenchError, match=r"bad\.yaml: entry 0 \(coop\): verified: True contradicts mark RECALL"):
        load_reported(dirs=[tmp_path])


def test_dg_and_xd_sections_with_shipped_reported_rows(tmp_path: Path) -> None:
    targets = ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    for seed in (1, 2):
        write_result(tmp_path, "coop", "imagenet", protocol="dg", seed=seed, targets=targets,
                     metrics={"source": 71.0 + seed, **{t: 60.0 + i + seed for i, t in enumerate(targets)}})
    write_result(tmp_path, "coop", "imagenet", protocol="xd", seed=1, targets=["dtd"],
                 metrics={"source": 71.0, "dtd": 44.0})
    text = write_leaderboard(tmp_path, plots=False).read_text()     # no <root>/reported → shipped YAML
    dg = text.split("## Domain generalisation — ViT-B-16-quickgelu/openai, trained on ImageNet (16 shots)")[1].split("\n## ")[0]
    assert re.search(r"\|\s*Method\s*\|\s*Source \(ImageNet\)\s*\|.*ImageNetV2.*\|\s*Target avg\s*\|", dg)
    mine = _row(dg, r"CoOp \| .*")
    assert mine[1] == "72.50 ± 0.71" and mine[-3] == f"{61.5 + 1.5:.2f}"        # one method: no "best" in bold
    ref = _row(dg, r"CoOp \(reported\)† \| .*")                        # RECALL → unverified
    published_avg = (64.20 + 47.99 + 49.71 + 75.21) / 4
    assert ref[1] == "71.51" and ref[-1] == f"{72.5 - 71.51:+.2f} / {63.0 - published_avg:+.2f}"
    xd = text.split("## Cross-dataset transfer — ViT-B-16-quickgelu/openai, trained on ImageNet (16 shots)")[1]
    assert _row(xd, r"CoOp \| .*")[1:4] == ["71.00", "44.00", "44.00"]
    assert _row(xd, r"CoOp \| .*", ci=True)[1].endswith(", 1 seed]")      # one seed: said in the interval


def test_across_datasets_ranking_and_no_empty_columns(tmp_path: Path) -> None:
    """Per K, methods ranked across datasets with the spread of their rank and Holm-corrected pairwise tests;
    a table without published numbers has no 'Δ vs reported' column; one value in a column is not 'best'."""
    for d, offset in (("dtd", 0.0), ("eurosat", 5.0), ("caltech101", 10.0)):
        for seed in (1, 2, 3):
            write_result(tmp_path, "coop", d, shots=4, seed=seed, metrics={"all": 60.0 + offset + seed})
            write_result(tmp_path, "lora", d, shots=4, seed=seed, metrics={"all": 70.0 + offset + seed})
    write_result(tmp_path, "coop", "dtd", shots=2, seed=1, metrics={"all": 50.0})
    (tmp_path / "reported").mkdir()                  # nothing published: no reference rows, no Δ column
    text = write_leaderboard(tmp_path, plots=False).read_text()
    k4 = text.split("#### K = 4 across datasets")[1].split("\n#")[0]
    assert "Holm-corrected over the 3 comparisons" in k4
    lora, coop = _row(k4, r"CLIP-LoRA \| .*", ci=True), _row(k4, r"CoOp \| .*", ci=True)
    assert lora[1].startswith("1.00") and coop[1].startswith("2.00") and lora[2] == "3"
    assert lora[3] == "3 / 0 / 0" and coop[3] == "0 / 0 / 3" and lora[4] == "100%"
    assert "Δ vs reported" not in text
    k2 = text.split("### K = 2")[1].split("\n#")[0]
    assert "**" not in _row(k2, r"CoOp \| .*")[1]                   # the only value of its column: no bold


def test_report_modules_stay_small() -> None:
    """No module of bench/report over 400 lines (that they import one way: tests/test_structure.py)."""
    folder = Path(__file__).resolve().parents[1] / "bench" / "report"
    assert all(len(p.read_text().splitlines()) <= 400 for p in folder.glob("*.py"))
