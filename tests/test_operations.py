"""Operations: every read verb takes --results like `bench run`."""

from __future__ import annotations

from pathlib import Path

import pytest
from result_fixtures import plan_cell, write_result, write_sweep

from bench.cli import main

REPO = Path(__file__).resolve().parents[1]
READ_VERBS = ["status", "verify", "leaderboard", "aggregate", "analyze"]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "somewhere" / "results"
    write_result(root, "clipfit", "dtd", ckpt=False)
    write_sweep(root, [plan_cell("clipfit", "dtd")])
    return root


@pytest.mark.parametrize("verb", ["status", "leaderboard", "aggregate"])
def test_read_verbs_take_results_as_a_flag_or_positionally(tree, verb, capsys, monkeypatch):
    monkeypatch.chdir(tree.parent)
    extra = ["--no-plots"] if verb == "leaderboard" else []
    assert main([verb, "--results", str(tree), *extra]) == 0
    flag = capsys.readouterr()
    assert main([verb, str(tree), *extra]) == 0
    positional = capsys.readouterr()
    assert flag.out == positional.out


@pytest.mark.parametrize("verb", READ_VERBS)
def test_read_verbs_refuse_a_missing_or_ambiguous_root(tmp_path, verb, capsys):
    assert main([verb, "--results", str(tmp_path / "nowhere")]) == 2
    assert "results folder" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert main([verb, str(tmp_path / "a"), "--results", str(tmp_path / "b")]) == 2
    assert "two results roots given" in capsys.readouterr().err


def test_verify_status_counts_with_the_flag(tree, capsys):
    assert main(["verify", "--results", str(tree), "--no-hashes"]) == 1      # the fixture's artifact is absent
    assert "artifact trainable recorded in result.json is missing" in capsys.readouterr().out
