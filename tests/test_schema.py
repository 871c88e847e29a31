"""One schema, one validation: the writer, `bench verify` and the collector judge a result.json alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from result_fixtures import write_result

from bench.report.collect import load_results
from bench.results import ResultStore, verify_tree
from bench.schema import Result, SchemaError, problem, read_result


def _drop_seed(doc):
    del doc["config"]["seed"]


BREAKS = {
    "version": (lambda d: d.update(schema_version=3), "schema_version 3 is not supported (this bench reads 1, 2)"),
    "status": (lambda d: d.update(status="running"), "status 'running' is neither 'completed' nor 'failed'"),
    "seed": (_drop_seed, "missing field(s) seed"),
    "shots": (lambda d: d["config"].update(shots="16"), "config.shots '16' is not an integer"),
    "metrics": (lambda d: d.update(metrics={}), "completed but has no metrics"),
    "acc": (lambda d: d["metrics"]["all"].update(acc=None), "metrics.all.acc is missing or not a number"),
    "variant": (lambda d: d["config"].update(variant="lam=4"), "config.variant is not a mapping"),
}


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_verify_and_the_collector_give_the_same_reason(tmp_path: Path, name: str) -> None:
    keep = write_result(tmp_path, "coop", "eurosat", metrics={"all": 60.0})
    path = write_result(tmp_path, "coop", "dtd", metrics={"all": 70.0})
    doc = json.loads(path.read_text())
    change, reason = BREAKS[name]
    change(doc)
    path.write_text(json.dumps(doc))
    assert problem(doc) == reason
    with pytest.raises(SchemaError, match="^" + reason.replace("(", r"\(").replace(")", r"\)") + "$"):
        read_result(path)
    res = load_results(tmp_path)
    assert res.malformed == [f"{path}: {reason}"] and set(res.frame["path"]) == {str(keep)}
    assert [f.message for f in verify_tree(tmp_path).findings if f.path == path] == [reason]


def test_both_versions_are_read_into_one_dataclass(tmp_path: Path) -> None:
    path = write_result(tmp_path, "coop", "dtd", metrics={"all": 70.0})
    v1 = read_result(path)
    assert isinstance(v1, Result) and v1.schema_version == 1 and v1.runtime == {} and v1.variant == {}
    doc = json.loads(path.read_text())
    doc.update(schema_version=2, runtime={"device": "cpu", "precision": "fp32"})
    doc["config"]["variant"] = {"lam": 4.0}
    v2 = Result.from_dict(doc)
    assert v2.variant == {"lam": 4.0} and v2.runtime["precision"] == "fp32"
    assert Result.from_dict(v2.to_dict()) == v2


def test_the_writer_records_a_result_that_breaks_the_schema_as_failed(tmp_path: Path) -> None:
    """A completed cell without metrics is neither lost nor taken for complete (and the sweep goes on)."""
    path = write_result(tmp_path, "coop", "dtd", metrics={"all": 70.0})
    doc = json.loads(path.read_text())
    doc.update(schema_version=2, metrics={})
    cell = {"cell_id": doc["cell_id"], "config": doc["config"]}
    store = ResultStore(tmp_path)
    store.write_result(cell, doc)
    written = read_result(path)
    assert written.status == "failed" and written.error["message"] == "completed but has no metrics"
    assert not store.is_completed(cell)
