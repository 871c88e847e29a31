"""LEADERBOARD.html: one self-contained page from the same blocks as LEADERBOARD.md — and, in a real headless
Chromium, tables that render with the right rows, sort on a click, and plots that load."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.report.browser import find_chromium, screenshot, selftest
from bench.report.leaderboard import build, sections, write_leaderboard
from bench.report.mdtable import Table

try:
    from tests.result_fixtures import write_result
except ImportError:  # tests/ run as a rootdir without a package
    from result_fixtures import write_result

ROOT = Path(__file__).resolve().parents[1]


def make_tree(root: Path) -> Path:
    rng = np.random.default_rng(5)
    for d in ("dtd", "eurosat"):
        for seed in (1, 2):
            for m, p in (("coop", 0.62), ("clipfit", 0.70), ("lora", 0.66)):
                write_result(root, m, d, protocol="base2new", seed=seed,
                             predictions={"base": rng.random(300) < p + 0.1, "new": rng.random(300) < p - 0.05})
                for k in (1, 4):
                    write_result(root, m, d, shots=k, seed=seed, predictions={"all": rng.random(400) < p + 0.02 * k})
        write_result(root, "zeroshot", d, protocol="base2new", shots=0,
                     predictions={"base": rng.random(300) < 0.6, "new": rng.random(300) < 0.62})
        write_result(root, "zeroshot", d, shots=0, predictions={"all": rng.random(400) < 0.6})
    return root


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, str, list[int]]:
    root = make_tree(tmp_path_factory.mktemp("html"))
    write_leaderboard(root, html=True)
    rows = [sum(not r.ref for r in b.rows) for b in sections(build(root)) if isinstance(b, Table)]
    return root, (root / "LEADERBOARD.html").read_text(), rows


def test_page_is_self_contained(page) -> None:
    root, text, rows = page
    assert text.startswith("<!DOCTYPE html>") and "<style>" in text and "<script>" in text
    assert not re.search(r"""(src|href)=["'](https?:)?//""", text)           # no network: nothing fetched
    assert text.count('src="data:image/png;base64,') == 3
    assert text.count('<table class="board">') == len(rows)
    assert "Generated " in text and "bench v0.1.0" in text                 # provenance header
    assert "Holm correction" in text and "title=\"95% CI" in text           # the test named; intervals on hover
    assert "Overlapping intervals are not the test" in text and '<body class="show-ci">' in text
    assert 'id="drill-data"' in text and "data-drill=" in text and 'data-fmt="csv"' in text
    assert 'class="tie-mark"' in text or "≈" in text
    assert "Δ vs reported" in text
    md = (root / "LEADERBOARD.md").read_text()
    assert md.count("\n|:") + md.count("\n|-") == len(rows)                   # the same tables as the markdown


def test_cli_html_flag(tmp_path: Path) -> None:
    from bench.cli import leaderboard

    write_result(tmp_path, "coop", "dtd", shots=4, metrics={"all": 70.0})
    parser = argparse.ArgumentParser()
    leaderboard.add_arguments(parser)
    assert leaderboard.execute(parser.parse_args([str(tmp_path), "--html", "--no-plots"])) == 0
    assert (tmp_path / "LEADERBOARD.md").is_file() and (tmp_path / "LEADERBOARD.html").is_file()
    out = tmp_path / "only.html"
    assert leaderboard.execute(parser.parse_args([str(tmp_path), "--format", "html", "-o", str(out)])) == 0
    assert "<table" in out.read_text() and "data:image/png" in out.read_text()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium: found, else installed by tests/install_chromium.sh (root + apt-get), else a skip."""
    exe = find_chromium()
    if exe is None:
        proc = subprocess.run(["bash", str(ROOT / "tests" / "install_chromium.sh")], capture_output=True, text=True,
                              timeout=1200)
        exe = find_chromium()
        if exe is None:
            reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "not found after install"
            pytest.skip(f"no headless Chromium for the browser test: {reason}")
    return exe


def test_in_a_real_browser(page, chromium, tmp_path: Path) -> None:
    root, _, rows = page
    report = selftest(chromium, root / "LEADERBOARD.html")
    assert report["tables"] == rows                                         # every table, every row rendered
    s = report["sorted"]
    assert s is not None and s["after"] != s["before"]                      # a click reorders the rows
    values = [v for v in s["values"] if v is not None]
    assert values == sorted(values, reverse=True) and s["sort"] == "descending"
    again = [v for v in s["reversed"] if v is not None]
    assert again == sorted(again) and s["reversedSort"] == "ascending"
    assert len(report["images"]) == 3 and all(i["ok"] and i["width"] > 100 for i in report["images"])
    # a working tool: every header described, intervals shown, filters, drill-down, downloads
    assert report["headTips"] and all(t and t != "sort by this column" for t in report["headTips"])
    assert report["ciShown"]
    assert report["methods"] == ["CLIP-LoRA", "CLIPFit", "CoOp", "Zero-shot CLIP"]
    # CLIP-LoRA's own row in every table (plus its reported row in the base-to-new summary)
    assert report["methodFilter"]["method"] == "CLIP-LoRA" and set(report["methodFilter"]["rows"]) <= {1, 2}
    assert min(report["methodFilter"]["rows"]) == 1 and report["textFilter"] == [0] * len(rows)
    proto = report["protoFilter"]
    assert proto["proto"] == "base2new" and proto["hidden"] > 0
    assert not any(h.startswith("Few-shot") for h in proto["shown"]) and proto["shown"][0].startswith("Base-to-new")
    assert report["datasetFilter"]["dataset"] == "DTD" and set(report["datasetFilter"]["hiddenHeads"]) == {"EuroSAT"}
    drill = report["drill"]
    assert not drill["hidden"] and "result.json" in drill["text"] and "log.txt" in drill["text"]
    assert re.search(r"\d run\(s\)", drill["text"])
    head, first = report["csv"].splitlines()[:2]
    assert head.startswith("Rank,Method,Base,New,HM") and re.search(r'"\d+\.\d\d ± \d+\.\d\d \[\d+\.\d, \d+\.\d\]"', first)
    assert report["json"] == len(rows)
    png = screenshot(chromium, root / "LEADERBOARD.html", tmp_path / "shot.png", 1000, 800)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
