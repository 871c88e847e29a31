"""Per-image predictions: the read side of predictions.npz, `bench aggregate --per-image` and its filters."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.report.collect import load_results
from bench.report.predictions import PER_IMAGE_COLUMNS, load_correct, per_image_frame, read_predictions

try:
    from tests.result_fixtures import write_result
except ImportError:  # tests/ run as a rootdir without a package
    from result_fixtures import write_result


def _tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for seed in (1, 2):
        write_result(root, "coop", "dtd", protocol="base2new", seed=seed,
                     predictions={"base": rng.random(50) < 0.7, "new": rng.random(40) < 0.5})
        write_result(root, "clipfit", "dtd", shots=4, seed=seed, predictions={"all": rng.random(30) < 0.6})
    write_result(root, "coop", "eurosat", shots=4, seed=1, metrics={"all": 70.0})          # an older result: no npz
    return root


def test_fixture_writes_cell_format_and_metrics(tmp_path: Path) -> None:
    label = np.array([0, 1, 2, 3], dtype=np.int32)
    path = write_result(tmp_path, "coop", "dtd", seed=1, predictions={"all": (label, np.array([0, 1, 0, 0]))})
    arrays = read_predictions(str(path.parent / "predictions.npz"), fields=("label", "top5", "top5_logit", "p_true"))
    a = arrays["all"]
    assert a["top5"].dtype == np.int32 and a["top5_logit"].dtype == np.float16 and a["p_true"].dtype == np.float16
    assert list(a["top5"][:, 0]) == [0, 1, 0, 0] and a["top5"].shape == (4, 5)
    assert all(len(set(row)) == 5 for row in a["top5"])                      # distinct classes per row
    row = load_results(tmp_path).frame.iloc[0]
    assert row["acc"] == 50.0 and row["n"] == 4 and row["predictions"].endswith("predictions.npz")


def test_per_image_frame_is_tidy(tmp_path: Path) -> None:
    frame = per_image_frame(load_results(_tree(tmp_path)).frame)
    assert list(frame.columns) == PER_IMAGE_COLUMNS
    assert len(frame) == 2 * (50 + 40) + 2 * 30                             # the npz-less cell is left out
    counts = frame.groupby(["method", "eval", "seed"], observed=True).size()
    assert counts[("coop", "base", 1)] == 50 and counts[("clipfit", "all", 2)] == 30
    sub = frame[(frame["method"] == "coop") & (frame["eval"] == "new") & (frame["seed"] == 1)]
    assert list(sub["image"]) == list(range(40))
    assert (sub["correct"] == (sub["label"] == sub["pred"])).all()
    assert np.allclose(sub["p_true"], np.where(sub["correct"], 0.8, 0.05), atol=1e-3)
    acc = frame.groupby(["cell_id", "eval"], observed=True)["correct"].mean() * 100   # npz agrees with result.json
    done = load_results(tmp_path).completed.set_index(["cell_id", "eval"])["acc"]
    assert len(acc) == 6 and np.allclose(acc.to_numpy(), done.loc[acc.index].to_numpy())


def test_load_correct_and_unreadable_file(tmp_path: Path, caplog) -> None:
    _tree(tmp_path)
    res = load_results(tmp_path)
    got = load_correct(res.frame)
    assert len(got) == 2 * 2 + 2 and all(v[0].dtype == bool for v in got.values())
    npz = Path(res.completed[res.completed["method"] == "clipfit"]["predictions"].iloc[0])
    npz.write_bytes(b"not a zip")
    assert len(load_correct(res.frame)) == 5
    assert "could not be read" in caplog.text


def _args(argv: list[str]) -> argparse.Namespace:
    from bench.cli import aggregate

    parser = argparse.ArgumentParser()
    aggregate.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_per_image_with_filters(tmp_path: Path, capsys) -> None:
    from bench.cli import aggregate

    _tree(tmp_path)
    assert aggregate.execute(_args([str(tmp_path), "--per-image", "--methods", "coop", "--seeds", "2"])) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(frame.columns) == PER_IMAGE_COLUMNS and len(frame) == 90 and set(frame["seed"]) == {2}
    out = tmp_path / "pi.json"
    assert aggregate.execute(_args([str(tmp_path), "--per-image", "--protocol", "fewshot", "--format", "json",
                                    "-o", str(out)])) == 0
    assert set(pd.read_json(out)["method"]) == {"clipfit"}
    with pytest.raises(BenchError, match="--datasets imagenet matches no result; available: dtd, eurosat"):
        aggregate.execute(_args([str(tmp_path), "--per-image", "--datasets", "imagenet"]))
    with pytest.raises(BenchError, match="--shots expects comma-separated integers"):
        aggregate.execute(_args([str(tmp_path), "--shots", "x"]))
    assert aggregate.execute(_args([str(tmp_path), "--table", "fewshot", "--datasets", "eurosat"])) == 0
    assert set(pd.read_csv(io.StringIO(capsys.readouterr().out))["dataset"]) == {"eurosat"}
