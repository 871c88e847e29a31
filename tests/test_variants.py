"""A method run with settings its card does not give is a row of its own in every report; schema-1 trees give the
leaderboard they gave."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
from result_fixtures import write_result
from test_leaderboard import make_tree

from bench.cli import main
from bench.report.collect import load_results
from bench.report.leaderboard import write_leaderboard

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
LAM4 = {"lam": 4.0}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """ClipFit as its card gives it (70 + seed), ClipFit with lam=4 (60 + seed) and CoOp (50 + seed), K=16."""
    for dataset in ("dtd", "eurosat"):
        for seed in (1, 2, 3):
            write_result(tmp_path, "clipfit", dataset, seed=seed, metrics={"all": 70.0 + seed})
            write_result(tmp_path, "clipfit", dataset, seed=seed, metrics={"all": 60.0 + seed}, variant=LAM4)
            write_result(tmp_path, "coop", dataset, seed=seed, metrics={"all": 50.0 + seed})
    return tmp_path


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_variants_are_rows_of_their_own(tree: Path) -> None:
    res = load_results(tree)
    assert not res.superseded and len(res.completed) == 18
    means = res.completed.groupby(["method", "variant", "base_method", "method_title"])["acc"].mean()
    assert means.to_dict() == {("clipfit", "", "clipfit", "CLIPFit"): 72.0,
                               ("clipfit@lam=4", "lam=4", "clipfit", "CLIPFit · lam=4"): 62.0,
                               ("coop", "", "coop", "CoOp"): 52.0}


def test_leaderboards_label_each_variant(tree: Path) -> None:
    md = write_leaderboard(tree, plots=False, now=NOW, html=True).read_text()
    rows = {cells[1]: cells for line in md.splitlines() if line.startswith("|")
            for cells in [[c.strip() for c in line.strip("|").split("|")]] if len(cells) > 2}
    assert rows["CLIPFit · lam=4"][2].startswith("62.00") and rows["CLIPFit"][2].strip("*").startswith("72.00")
    html = (tree / "LEADERBOARD.html").read_text()
    assert "CLIPFit · lam=4" in html and re.search(r">\s*CLIPFit\s*<", html)


def test_compare_two_variants_of_one_method(tree: Path, capsys) -> None:
    assert main(["compare", "clipfit", "clipfit@lam=4", "--results", str(tree), "--format", "csv"]) == 0
    rows = _csv(capsys.readouterr().out)
    assert {r["dataset"] for r in rows} == {"dtd", "eurosat", "average"}
    assert all(float(r["delta"]) == pytest.approx(10.0) for r in rows)


def test_aggregate_keeps_variants_apart_and_methods_selects_the_card_with_its_variants(tree: Path, capsys) -> None:
    assert main(["aggregate", str(tree), "--methods", "clipfit"]) == 0
    rows = _csv(capsys.readouterr().out)
    assert {(r["method"], r["variant"]) for r in rows} == {("clipfit", ""), ("clipfit@lam=4", "lam=4")}
    assert main(["aggregate", str(tree), "--methods", "clipfit@lam=4"]) == 0
    assert {r["method"] for r in _csv(capsys.readouterr().out)} == {"clipfit@lam=4"}


def test_a_schema_1_tree_gives_the_leaderboard_it_gave(tmp_path: Path) -> None:
    """The same results as schema 1 (today's fixtures) and as schema 2 without variants: the same leaderboard."""
    root = make_tree(tmp_path / "r")
    before = write_leaderboard(root, plots=False, now=NOW).read_text()
    for path in (root / "runs").rglob("result.json"):
        doc = json.loads(path.read_text())
        assert doc["schema_version"] == 1
        doc["schema_version"] = 2
        doc["config"]["variant"] = {}
        doc["runtime"] = {"device": "cpu", "precision": "fp32"}
        path.write_text(json.dumps(doc))
    assert write_leaderboard(root, plots=False, now=NOW).read_text() == before
    assert "Zero-shot CLIP" in before and re.search(r"\| CoOp +\|", before)
