"""Packing cells onto one device: N worker processes share the cell list by lock, a further worker starts only
when the device's free memory holds another cell, and --force never reruns what this sweep already finished. On
the CPU, `bench run` packs one worker per CPU by default (conftest sets BENCH_WORKERS=1 for the other tests)."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.executors import local
from bench.results import ResultStore

FAST = ["--set", "epochs=2", "--set", "batch_size=8", "--no-leaderboard", "--shots", "1", "--seeds", "1,2"]


def run(toy, r, *extra):
    return main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(r), "--methods", "clipfit,coop",
                 *FAST, *extra])


def results(r):
    return [res for _, res in ResultStore(r).iter_results()]


def test_two_cells_at_once_run_every_cell_exactly_once(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(local, "free_mb", lambda device: 1e9)
    r = tmp_path / "r"
    assert run(toy, r, "--cells-per-gpu", "2", "--set", "epochs=150") == 0   # the 2nd worker starts at the 1st step
    res = results(r)
    assert len(res) == 8 and all(x["status"] == "completed" for x in res)
    assert len({x["env"]["pid"] for x in res}) == 2                      # two workers shared the cells


def test_no_further_worker_when_the_device_is_full(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(local, "free_mb", lambda device: 1.0)              # 1 MiB free: no room for another cell
    r = tmp_path / "r"
    assert run(toy, r, "--cells-per-gpu", "4") == 0
    res = results(r)
    assert len(res) == 8 and len({x["env"]["pid"] for x in res}) == 1


def test_force_with_packing_reruns_each_cell_once(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(local, "free_mb", lambda device: 1e9)
    r = tmp_path / "r"
    assert run(toy, r) == 0
    first = {x["cell_id"]: x["started_at"] for x in results(r)}
    assert run(toy, r, "--cells-per-gpu", "2", "--force") == 0
    logs = {p.parent.name: p.read_text().count("trainable ") for p in (r / "runs").rglob("log.txt")}
    assert set(logs) == set(first) and sorted(logs.values()) == [2] * 8, logs   # once before, once forced


def test_a_first_step_probe_sizes_the_packing_before_any_cell_ends(tmp_path, monkeypatch):
    """The parent reads the workers' probe files (peak memory after a cell's first training step), so the other
    workers can start before any cell has finished; a half-written probe is ignored."""
    from bench.memprobe import PROBE_ENV, peak_mb, read_probes, write_probe

    store = ResultStore(tmp_path / "r")
    assert local._largest_peak(store, [], "", tmp_path) is None
    monkeypatch.setenv(PROBE_ENV, str(tmp_path / "probe-1"))
    write_probe(812.5)
    (tmp_path / "probe-2.123.tmp").write_text("99999")                    # a writer killed mid-write
    assert read_probes(tmp_path) == [812.5]
    assert local._largest_peak(store, [], "", tmp_path) == 812.5
    import torch

    assert peak_mb(torch.device("cpu")) > 0


def test_the_cpu_default_is_one_worker_per_cpu_and_flags_choose(monkeypatch):
    from bench.data import decoded

    monkeypatch.setattr(decoded, "available_cpus", lambda: 4)
    monkeypatch.delenv(local.WORKERS_ENV, raising=False)
    assert local.cpu_workers(None, cells=186) == 4
    assert local.cpu_workers(None, cells=3) == 3 and local.cpu_workers(None, cells=1) == 1
    assert local.cpu_workers(2, cells=186) == 2
    monkeypatch.setenv(local.WORKERS_ENV, "1")
    assert local.cpu_workers(None, cells=186) == 1 and local.cpu_workers(3, cells=186) == 3   # the flag wins
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(local.WORKERS_ENV, bad)
        with pytest.raises(BenchError, match=local.WORKERS_ENV):
            local.cpu_workers(None, cells=186)


def test_a_default_cpu_run_packs_workers_and_gets_the_same_results(toy, tmp_path, monkeypatch, capfd):
    """No flag, BENCH_WORKERS unset, 2 CPUs: two single-threaded workers share the cells, the parent shows one
    progress bar, and every metric equals the in-process run's."""
    from bench.data import decoded

    monkeypatch.setattr(local, "free_mb", lambda device: 1e9)
    monkeypatch.setattr(decoded, "available_cpus", lambda: 2)
    slow = ["--set", "epochs=150"]                                        # the 2nd worker starts at the 1st step
    assert run(toy, tmp_path / "one", *slow) == 0                         # BENCH_WORKERS=1 (conftest): in-process
    monkeypatch.delenv(local.WORKERS_ENV)
    capfd.readouterr()
    assert run(toy, tmp_path / "two", *slow) == 0
    assert "8/8" in capfd.readouterr().err
    one, two = results(tmp_path / "one"), results(tmp_path / "two")
    assert len({x["env"]["pid"] for x in one}) == 1 and len({x["env"]["pid"] for x in two}) == 2
    assert {x["cell_id"]: x["metrics"] for x in one} == {x["cell_id"]: x["metrics"] for x in two}
