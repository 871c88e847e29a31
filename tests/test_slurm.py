"""SLURM executor against a real single-node cluster (slurm/start.sh), and submitit's debug executor.

The cluster tests start the cluster once per session (root and apt-get needed; CI has both) with a small
MaxArraySize so array chunking is exercised, and stop it at the end. Set BENCH_SLURM_DIR to reuse a running one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.results import ResultStore

REPO = Path(__file__).resolve().parents[1]
FAST = ["--set", "epochs=2", "--set", "batch_size=8"]


def _env_from(env_sh: Path) -> dict[str, str]:
    out = subprocess.run(["bash", "-c", f"source {env_sh} && env -0"], capture_output=True, text=True, check=True)
    return dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)


@pytest.fixture(scope="session")
def slurm_env():
    reuse = os.environ.get("BENCH_SLURM_DIR")
    if reuse:
        folder, started = Path(reuse), False
    else:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("the SLURM tests start a local cluster: they need root and apt-get")
        folder, started = Path("/tmp/bench-slurm-tests"), True
        env = {**os.environ, "SLURM_LOCAL_MAX_ARRAY_SIZE": "5", "SLURM_LOCAL_CPUS": "4", "SLURM_LOCAL_GPUS": "1"}
        subprocess.run(["bash", str(REPO / "slurm" / "stop.sh"), str(folder)], env=env, capture_output=True)
        res = subprocess.run(["bash", str(REPO / "slurm" / "start.sh"), str(folder), "--fresh"], env=env,
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            pytest.fail(f"slurm/start.sh failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in _env_from(folder / "env.sh").items() if k.startswith("SLURM") or k == "PATH"})
    os.environ["OMP_NUM_THREADS"] = "1"              # same thread count in jobs and in reference runs
    yield folder
    os.environ.clear()
    os.environ.update(saved)
    if started:
        subprocess.run(["bash", str(REPO / "slurm" / "stop.sh"), str(folder)], capture_output=True, timeout=120)


def _run(toy, results, *extra):
    return main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(results), "--no-leaderboard",
                 "--executor", "slurm", "--profile", "local", "--wait", *extra])


def _sweep(results: Path) -> dict:
    return ResultStore(results).sweeps()[-1]


@pytest.mark.slurm
def test_array_of_twelve_cells_chunked_to_max_array_size(slurm_env, toy, tmp_path):
    r = tmp_path / "r"
    assert _run(toy, r, "--methods", "clipfit,coop,clip_adapter", "--shots", "1,2", "--seeds", "1", *FAST) == 0
    results = [res for _, res in ResultStore(r).iter_results()]
    assert len(results) == 12 and all(res["status"] == "completed" for res in results)
    arrays = {res["env"]["slurm_array_job_id"] for res in results}
    assert len(arrays) == 3                                   # MaxArraySize 5: 12 tasks → 5 + 5 + 2
    assert all(res["env"]["slurm_job_id"] and res["env"]["slurm_array_task_id"] is not None for res in results)
    assert len(set(_sweep(r)["jobs"].values())) == 12


@pytest.mark.slurm
def test_cells_per_job_packs_cells(slurm_env, toy, tmp_path):
    r = tmp_path / "r"
    assert _run(toy, r, "--methods", "clipfit,coop,clip_adapter", "--shots", "1,2", "--seeds", "1",
                "--cells-per-job", "4", *FAST) == 0
    jobs = _sweep(r)["jobs"]
    assert len(jobs) == 12 and len(set(jobs.values())) == 3
    tasks = {(res["env"]["slurm_array_job_id"], res["env"]["slurm_array_task_id"])
             for _, res in ResultStore(r).iter_results()}
    assert len(tasks) == 3


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slurm
def test_usr2_requeues_and_resumes_bit_identically(slurm_env, toy, tmp_path):
    from safetensors.torch import load_file

    r = tmp_path / "r"
    argv = ["--methods", "clipfit", "--datasets", "toy", "--shots", "2", "--seeds", "1", "--set", "epochs=300",
            "--set", "ckpt_interval_s=0",
            "--set", "batch_size=4"]
    assert main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(r), "--no-leaderboard",
                 "--executor", "slurm", "--profile", "local", *argv]) == 0
    job_id = next(iter(_sweep(r)["jobs"].values()))
    _wait_for(lambda: list((r / "runs").rglob("ckpt/state.safetensors")), 120, "the first epoch checkpoint")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    _wait_for(lambda: any(res["status"] == "completed" for _, res in ResultStore(r).iter_results()), 300,
              "the requeued task to finish")
    (path, res), = list(ResultStore(r).iter_results())
    assert res["resumed"] is True
    ref_root = tmp_path / "ref"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "toy", "--data-root", str(toy), "--results",
                    str(ref_root), "--no-leaderboard", *argv], env=env, check=True, capture_output=True)
    (ref_path, ref), = list(ResultStore(ref_root).iter_results())
    assert ref["cell_id"] == res["cell_id"] and ref["resumed"] is False
    a, b = load_file(str(path.parent / "trainable.safetensors")), load_file(str(ref_path.parent / "trainable.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slurm
def test_failed_cell_shows_in_status_with_its_log(slurm_env, toy, tmp_path, capsys):
    bad = json.loads((toy / "toy2" / "split_toy.json").read_text())["test"][0][0]
    (toy / "toy2" / "images" / bad).write_bytes(b"garbage")
    r = tmp_path / "r"
    assert _run(toy, r, "--methods", "coop", "--shots", "1", "--seeds", "1", *FAST) == 1
    capsys.readouterr()
    for _ in range(20):                      # sacct lags slurmctld by a second or so (slurm-single-node.md)
        main(["status", str(r)])
        out = capsys.readouterr().out
        if "SLURM:" in out:
            break
        time.sleep(1)
    assert "1 done, 1 failed" in out and "log:" in out and "SLURM:" in out


@pytest.mark.slurm
def test_json_architecture_and_weights_file_run_on_the_cluster(slurm_env, toy, tmp_path):
    import open_clip
    import torch

    arch = tmp_path / "my-arch.json"
    cfg = {"embed_dim": 32, "quick_gelu": True, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                                               "patch_size": 8},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    arch.write_text(json.dumps(cfg))
    torch.save(open_clip.CLIP(**cfg).state_dict(), tmp_path / "w.pt")
    r = tmp_path / "r"
    assert _run(toy, r, "--backbone", str(arch), "--pretrained", str(tmp_path / "w.pt"), "--datasets", "toy",
                "--methods", "clipfit,coop", "--shots", "1", "--seeds", "1", *FAST) == 0
    results = [res for _, res in ResultStore(r).iter_results()]
    assert len(results) == 2 and all(res["status"] == "completed" and res["env"]["slurm_job_id"] for res in results)
    assert {res["config"]["activation"] for res in results} == {"quick_gelu"}


def test_debug_executor_runs_cells_in_process(toy, tmp_path):
    r = tmp_path / "r"
    assert main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(r), "--no-leaderboard",
                 "--executor", "debug", "--methods", "clipfit", "--shots", "1", "--seeds", "1,2", *FAST]) == 0
    assert len(list(ResultStore(r).iter_results())) == 4
