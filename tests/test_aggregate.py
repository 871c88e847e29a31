"""Aggregation: the long frame, completeness counts and the summary tables' conventions (ddof=1, HM rules)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.report.aggregate import (
    base2new_average,
    base2new_table,
    cost_table,
    fewshot_average,
    fewshot_table,
    harmonic_mean,
    summaries,
    transfer_table,
)
from bench.report.collect import load_results

try:
    from tests.result_fixtures import plan_cell, write_result, write_sweep
except ImportError:  # tests/ run as a rootdir without a package
    from result_fixtures import plan_cell, write_result, write_sweep


def _b2n(root: Path, method: str, dataset: str, seeds: dict[int, tuple[float, float]], **kw) -> None:
    for seed, (b, n) in seeds.items():
        write_result(root, method, dataset, protocol="base2new", seed=seed, metrics={"base": b, "new": n}, **kw)


def test_long_frame_has_one_row_per_evaluation(tmp_path: Path) -> None:
    _b2n(tmp_path, "coop", "dtd", {1: (80, 60), 2: (82, 58)})
    write_result(tmp_path, "coop", "dtd", shots=4, seed=1, metrics={"all": 70.0})
    res = load_results(tmp_path)
    assert len(res.frame) == 5
    assert set(res.frame["eval"]) == {"base", "new", "all"}
    for col in ("cell_id", "status", "method", "method_title", "dataset", "dataset_title", "suite", "protocol",
                "shots", "seed", "backbone", "pretrained", "eval", "acc", "macro_f1", "trainable_params",
                "train_s", "eval_s", "images_per_s", "peak_mem_mb", "device"):
        assert col in res.frame.columns


def test_hm_is_taken_from_seed_means_not_mean_of_seed_hms(tmp_path: Path) -> None:
    _b2n(tmp_path, "coop", "dtd", {1: (90, 50), 2: (50, 90)})
    row = base2new_table(load_results(tmp_path).frame).iloc[0]
    per_seed = [harmonic_mean(90, 50), harmonic_mean(50, 90)]
    assert row["base_mean"] == 70 and row["new_mean"] == 70
    assert row["hm"] == pytest.approx(70.0)
    assert sum(per_seed) / 2 == pytest.approx(64.2857, abs=1e-3)      # what the wrong convention would give


def test_average_row_is_hm_of_averages_clip_example(tmp_path: Path) -> None:
    # Two datasets whose Base/New average to CLIP's published 69.34 / 74.22 → HM 71.70 (CoCoOp Table 1).
    _b2n(tmp_path, "zeroshot", "dtd", {1: (59.34, 94.22)})
    _b2n(tmp_path, "zeroshot", "eurosat", {1: (79.34, 54.22)})
    frame = load_results(tmp_path).frame
    per = base2new_table(frame)
    avg = base2new_average(per, frame).iloc[0]
    assert avg["base"] == pytest.approx(69.34) and avg["new"] == pytest.approx(74.22)
    assert round(avg["hm"], 2) == 71.70
    assert round(per["hm"].mean(), 2) != 71.70                         # mean of per-dataset HMs ≈ 68.62
    assert harmonic_mean(69.34, 74.22) == pytest.approx(71.70, abs=5e-3)


def test_std_is_sample_std_ddof1(tmp_path: Path) -> None:
    for seed, acc in ((1, 70.0), (2, 72.0), (3, 77.0)):
        write_result(tmp_path, "coop", "dtd", shots=16, seed=seed, metrics={"all": acc})
    row = fewshot_table(load_results(tmp_path).frame).iloc[0]
    assert row["mean"] == pytest.approx(73.0)
    assert row["std"] == pytest.approx(math.sqrt(((3**2) + 1 + 4**2) / 2))   # 3.606 (ddof=0 would be 2.944)
    assert row["n"] == 3


def test_fewshot_average_is_mean_of_dataset_means_and_marks_partial(tmp_path: Path) -> None:
    plan = []
    for seed, (a, b) in zip((1, 2, 3), ((60, 80), (62, 82), (64, None))):
        write_result(tmp_path, "coop", "dtd", shots=4, seed=seed, metrics={"all": a})
        plan += [plan_cell("coop", "dtd", shots=4, seed=seed), plan_cell("coop", "eurosat", shots=4, seed=seed)]
        if b is not None:
            write_result(tmp_path, "coop", "eurosat", shots=4, seed=seed, metrics={"all": b})
    write_sweep(tmp_path, plan)
    res = load_results(tmp_path)
    table = fewshot_table(res.frame, res.expected)
    euro = table[table["dataset"] == "eurosat"].iloc[0]
    assert (euro["n"], euro["n_planned"], bool(euro["partial"])) == (2, 3, True)
    avg = fewshot_average(table, res.frame).iloc[0]
    assert avg["acc"] == pytest.approx((62 + 81) / 2)                 # not the pooled mean (62*3+81*2)/5
    assert bool(avg["partial"]) and avg["n_datasets"] == 2
    assert avg["std"] == pytest.approx(1.4142, abs=1e-3)               # over seeds 1,2 (present on both)
    assert res.completeness()["missing"] == 1


def test_failed_cell_is_counted_not_averaged(tmp_path: Path) -> None:
    _b2n(tmp_path, "coop", "dtd", {1: (80, 60), 2: (84, 64)})
    write_result(tmp_path, "coop", "dtd", protocol="base2new", seed=3, status="failed")
    res = load_results(tmp_path)
    c = res.completeness()
    assert (c["done"], c["failed"], c["expected"]) == (2, 1, 3)
    row = base2new_table(res.frame, res.expected).iloc[0]
    assert row["base_mean"] == 82 and row["n"] == 2
    assert bool(row["partial"])                                        # seed 3 was planned (it ran, and failed)
    assert list(res.failed["seed"]) == [3]


def test_malformed_file_is_skipped_and_counted_strict_raises(tmp_path: Path, caplog) -> None:
    write_result(tmp_path, "coop", "dtd", metrics={"all": 70.0})
    bad = tmp_path / "runs" / "fewshot" / "dtd" / "coop" / "deadbeef" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1,')
    res = load_results(tmp_path)
    assert len(res.malformed) == 1 and str(bad) in res.malformed[0]
    assert "skipped malformed" in caplog.text
    with pytest.raises(BenchError, match="deadbeef/result.json: not valid JSON"):
        load_results(tmp_path, strict=True)


def test_wrong_schema_and_missing_field_are_malformed(tmp_path: Path) -> None:
    path = write_result(tmp_path, "coop", "dtd", metrics={"all": 70.0})
    doc = json.loads(path.read_text())
    doc["schema_version"] = 3
    path.write_text(json.dumps(doc))
    path2 = write_result(tmp_path, "coop", "eurosat", metrics={"all": 70.0})
    doc = json.loads(path2.read_text())
    del doc["config"]["seed"]
    path2.write_text(json.dumps(doc))
    res = load_results(tmp_path)
    assert res.completed.empty
    assert sorted(m.split(": ", 1)[1] for m in res.malformed) == [
        "missing field(s) seed", "schema_version 3 is not supported (this bench reads 1, 2)"]


def test_ckpt_folders_are_not_read(tmp_path: Path) -> None:
    write_result(tmp_path, "coop", "dtd", metrics={"all": 70.0}, ckpt=True)
    running = tmp_path / "runs" / "fewshot" / "dtd" / "coop" / "0123456789abcdef" / "ckpt"
    running.mkdir(parents=True)
    (running / "result.json").write_text("not json at all")          # would be malformed if it were read
    res = load_results(tmp_path)
    assert len(res.completed) == 1 and not res.malformed


def test_newer_cell_supersedes_older_with_same_key(tmp_path: Path) -> None:
    write_result(tmp_path, "coop", "dtd", metrics={"all": 60.0}, finished_at="2026-01-01T00:00:00Z")
    write_result(tmp_path, "coop", "dtd", metrics={"all": 70.0}, finished_at="2026-02-01T00:00:00Z", id_salt="v2")
    res = load_results(tmp_path)
    assert list(res.completed["acc"]) == [70.0]
    assert len(res.superseded) == 1 and res.completeness()["superseded"] == 1


def test_transfer_table_has_source_targets_and_target_average(tmp_path: Path) -> None:
    for seed, shift in ((1, 0.0), (2, 2.0)):
        write_result(tmp_path, "coop", "imagenet", protocol="dg", seed=seed,
                     metrics={"source": 70 + shift, "imagenet_v2": 60 + shift, "imagenet_a": 50 + shift})
    t = transfer_table(load_results(tmp_path).frame, "dg").set_index("eval")
    assert t.loc["source", "mean"] == 71 and t.loc["imagenet_v2", "mean"] == 61
    assert t.loc["target_avg", "mean"] == pytest.approx((61 + 51) / 2)
    assert t.loc["imagenet_v2", "std"] == pytest.approx(math.sqrt(2))
    with pytest.raises(BenchError):
        transfer_table(load_results(tmp_path).frame, "fewshot")


def test_cost_table_labels_gpu_and_cpu_hours(tmp_path: Path) -> None:
    write_result(tmp_path, "coop", "dtd", seed=1, train_s=3000, eval_s=600)
    write_result(tmp_path, "coop", "dtd", seed=2, train_s=3000, eval_s=600)
    write_result(tmp_path, "zeroshot", "dtd", shots=0, device="cpu", train_s=0.0, eval_s=36.0)
    cost = cost_table(load_results(tmp_path).frame).set_index("method")
    assert cost.loc["coop", "gpu_h"] == pytest.approx(2.0) and cost.loc["coop", "cost"] == "2.00 GPU-h"
    assert cost.loc["zeroshot", "cost"] == "0.01 CPU-h"
    assert cost.loc["coop", "trainable_params"] == 8192


def test_missing_root_and_empty_root_raise(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="does not exist"):
        load_results(tmp_path / "nope")
    with pytest.raises(BenchError, match="neither runs/ nor sweeps/"):
        load_results(tmp_path)


def test_summaries_names(tmp_path: Path) -> None:
    _b2n(tmp_path, "coop", "dtd", {1: (80, 60)})
    write_result(tmp_path, "coop", "dtd", shots=1, metrics={"all": 50.0})
    assert set(summaries(load_results(tmp_path))) == {"fewshot", "fewshot_avg", "base2new", "base2new_avg", "cost"}


def _cli(argv: list[str]) -> argparse.Namespace:
    from bench.cli import aggregate
    parser = argparse.ArgumentParser()
    aggregate.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_aggregate_csv_json_md(tmp_path: Path, capsys) -> None:
    from bench.cli import aggregate
    _b2n(tmp_path, "coop", "dtd", {1: (80, 60), 2: (82, 62)})
    out = tmp_path / "agg.csv"
    assert aggregate.execute(_cli([str(tmp_path), "-o", str(out)])) == 0
    assert out.read_text().splitlines()[0].startswith("cell_id,status,method")
    assert aggregate.execute(_cli([str(tmp_path), "--format", "json", "--table", "base2new_avg"])) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["hm"] == pytest.approx(harmonic_mean(81, 61))
    assert aggregate.execute(_cli([str(tmp_path), "--format", "md"])) == 0
    text = capsys.readouterr().out
    assert "## base2new_avg" in text and "| backbone" in text
    with pytest.raises(BenchError, match="table 'dg' has no data"):
        aggregate.execute(_cli([str(tmp_path), "--table", "dg"]))


def test_cli_modules_do_not_import_pandas_or_matplotlib() -> None:
    code = ("import sys, bench.cli.aggregate, bench.cli.leaderboard; "
            "print(any(m in sys.modules for m in ('pandas', 'matplotlib', 'tabulate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"
