"""A full disk while a cell writes its artifacts or its result: nothing half-written stays, the cell is failed
(or stays pending when even the failure cannot be written), and the sweep goes on."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from bench import results
from bench.cli import main
from bench.results import ResultStore

FAST = ["--set", "epochs=1", "--set", "batch_size=8", "--no-leaderboard", "--shots", "1", "--seeds", "1"]


def test_atomic_write_leaves_no_temporary_file_when_the_disk_is_full(tmp_path):
    def full(tmp: Path) -> None:
        tmp.write_text('{"half": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        results.atomic_write(tmp_path / "result.json", full)
    assert list(tmp_path.iterdir()) == []


def test_sweep_goes_on_when_results_cannot_be_written(toy, tmp_path, monkeypatch):
    written = []
    original = results.atomic_write

    def flaky(path: Path, write) -> None:              # the disk fills up at the second result.json
        if path.name == "result.json":
            written.append(path)
            if len(written) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        original(path, write)

    monkeypatch.setattr(results, "atomic_write", flaky)
    r = tmp_path / "r"
    code = main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(r), "--methods", "clipfit",
                 *FAST])
    assert code == 1 and len(written) == 2                 # both cells ran; one result could not be written
    docs = [json.loads(p.read_text()) for p in (r / "runs").rglob("result.json")]
    assert len(docs) == 1 and docs[0]["status"] == "completed"
    assert not [p for p in r.rglob("*") if ".tmp" in p.name]
    monkeypatch.setattr(results, "atomic_write", original)
    assert main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(r), "--methods", "clipfit",
                 *FAST]) == 0                            # space back: only the missing cell runs
    assert sum(res["status"] == "completed" for _, res in ResultStore(r).iter_results()) == 2
