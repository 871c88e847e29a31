"""Operations: every read verb takes --results like `bench run`; SLURM profiles ship in the package; a refused run
records no sweep; each cell's few-shot draw is saved beside its result.json."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from result_fixtures import plan_cell, write_result, write_sweep

from bench import profiles
from bench.cli import main
from bench.errors import BenchError

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


# ---- SLURM profiles ----

def test_profiles_resolve_from_the_package_without_the_source_tree(tmp_path, monkeypatch):
    shipped = tmp_path / "site-packages" / "bench" / "_profiles"
    shutil.copytree(REPO / "slurm" / "profiles", shipped)
    monkeypatch.setattr(profiles, "SHIPPED_DIRS", [shipped, tmp_path / "no-checkout" / "slurm" / "profiles"])
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("BENCH_PROFILES_PATH", raising=False)
    assert profiles.find_profile("local") == shipped / "local.yaml"
    assert profiles.slurm_options("local", timeout_min=5).partition == "debug"
    with pytest.raises(BenchError, match="available: gpu-cluster.example, local"):
        profiles.find_profile("nosuch")


def test_user_profiles_come_first(tmp_path, monkeypatch):
    user = tmp_path / "config" / "bench" / "profiles"
    user.mkdir(parents=True)
    (user / "local.yaml").write_text("partition: mine\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "team.yaml").write_text("partition: team\ncells_per_job: 4\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("BENCH_PROFILES_PATH", str(extra))
    assert profiles.slurm_options("local").partition == "mine"
    assert profiles.slurm_options("team").cells_per_job == 4
    assert profiles.slurm_options(str(extra / "team.yaml"), cells_per_job=2).cells_per_job == 2


def test_the_wheel_ships_the_profiles():
    tomllib = pytest.importorskip("tomllib")
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "bench._profiles" in conf["packages"]
    assert conf["package-dir"]["bench._profiles"] == "slurm/profiles"
    assert conf["package-data"]["bench._profiles"] == ["*.yaml"]
    assert profiles.SHIPPED_DIRS[0] == Path(profiles.__file__).resolve().parent / "_profiles"


# ---- a refused run records no sweep ----

def test_a_run_that_fails_its_backbone_check_records_no_sweep(toy, tmp_path, capsys):
    r = tmp_path / "r"
    argv = ["run", "--methods", "coop", "--datasets", "toy", "--backbone", "ViT-B-32", "--pretrained", "openai",
            "--data-root", str(toy), "--shots", "1", "--seeds", "1", "--results", str(r), "--no-leaderboard"]
    for _ in range(2):
        assert main(argv) == 2
    assert "cannot fetch pretrained weights" in capsys.readouterr().err
    assert not list(r.glob("sweeps/*.json"))
    assert main(["status", "--results", str(r)]) == 0
    assert "0 cells" in capsys.readouterr().out


def test_a_slurm_run_without_sbatch_records_no_sweep(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))                # no sbatch
    r = tmp_path / "r"
    code = main(["run", "--suite", "toy", "--methods", "clipfit", "--datasets", "toy", "--data-root", str(toy),
                 "--shots", "1", "--seeds", "1", "--results", str(r), "--executor", "slurm", "--profile", "local",
                 "--no-leaderboard"])
    assert code == 2 and "needs sbatch on PATH" in capsys.readouterr().err
    assert not list(r.glob("sweeps/*.json"))


# ---- the few-shot manifest beside result.json ----

def test_the_fewshot_draw_is_saved_beside_the_result_and_verified(toy, tmp_path, capsys):
    r = tmp_path / "r"
    assert main(["run", "--suite", "toy", "--methods", "zeroshot,clipfit", "--datasets", "toy", "--data-root", str(toy),
                 "--shots", "2", "--seeds", "1", "--results", str(r), "--no-leaderboard", "--set", "epochs=1",
                 "--set", "batch_size=8"]) == 0
    results = {json.loads(p.read_text())["config"]["method"]: p for p in r.rglob("result.json")}
    res = json.loads(results["clipfit"].read_text())
    path = results["clipfit"].parent / "fewshot_manifest.json"
    data = path.read_bytes()
    manifest = json.loads(data)
    assert manifest["shots"] == 2 and manifest["seed"] == 1 and len(manifest["train"]) == 5
    assert all(len(v) == 2 and not v[0].startswith("/") for v in manifest["train"].values())
    assert res["artifacts"]["fewshot_manifest"] == {"path": "fewshot_manifest.json",
                                                    "sha256": hashlib.sha256(data).hexdigest()}
    assert hashlib.sha256(data).hexdigest() == res["data"]["manifest_sha256"]      # the hash in the cell id
    assert not (results["zeroshot"].parent / "fewshot_manifest.json").exists()    # zero-shot draws nothing
    capsys.readouterr()
    assert main(["verify", "--results", str(r)]) == 0
    path.write_bytes(data.replace(b'"seed":1', b'"seed":2'))
    assert main(["verify", "--results", str(r)]) == 1
    assert "artifact fewshot_manifest: sha256" in capsys.readouterr().out
