"""`bench verify`: clean on a fresh sweep; catches edited, truncated, moved and copied results, bad artifacts,
leftover temp files and orphaned checkpoints, one line each; `bench status` counts the problems."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import NO_TORCH
from toydata import make_toy_world

from bench.cli import main
from bench.lockfile import FILE_NAME
from bench.locks import cell_lock
from bench.results import verify_tree

FAST = ["--set", "epochs=2", "--set", "iters_per_shot=2", "--set", "batch_size=8"]


SWEEP_INPUTS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def sweep_once(tmp_path_factory):
    """One real sweep per module (zero-shot, ClipFit, CoOp on toy, K=1, seed 1); tests get copies of its tree."""
    from bench import cards, grid

    base = tmp_path_factory.mktemp("sweep")
    data, cards_root = make_toy_world(base)
    SWEEP_INPUTS.update(data=data, cards=cards_root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CARDS_PATH", str(cards_root))
        cards.clear_caches()
        grid.dataset_splits.cache_clear()
        assert main(["run", "--suite", "toy", "--data-root", str(data), "--results", str(base / "r"),
                     "--no-leaderboard", "--methods", "zeroshot,clipfit,coop", "--datasets", "toy", "--shots", "1",
                     "--seeds", "1", *FAST]) == 0
    cards.clear_caches()
    grid.dataset_splits.cache_clear()
    return base / "r"


@pytest.fixture
def swept(sweep_once, tmp_path):
    """A copy of the fresh sweep and its cell folders by method."""
    root = tmp_path / "r"
    shutil.copytree(sweep_once, root)
    cells = {p.parent.parent.name: p.parent for p in (root / "runs").rglob("result.json")}
    assert set(cells) == {"zeroshot", "clipfit", "coop"}
    return root, cells


def verify(root: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["verify", str(root), *extra])
    return code, capsys.readouterr().out.strip().splitlines()


def edit_json(path: Path, change) -> None:
    res = json.loads(path.read_text())
    change(res)
    path.write_text(json.dumps(res, indent=2))


def test_a_fresh_sweep_is_clean(swept, capsys):
    root, _ = swept
    code, lines = verify(root, capsys)
    assert code == 0 and lines == [f"3 results checked under {root}: clean"]
    capsys.readouterr()
    main(["status", str(root)])
    assert "verify: no problems" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-c", NO_TORCH.format(argv=["verify", str(root)])], capture_output=True,
                         text=True, timeout=60).stdout
    assert "clean" in out and out.strip().endswith("HEAVY:"), out[-500:]     # a light verb


def _edit_config(cells):
    edit_json(cells["clipfit"] / "result.json", lambda r: r["config"]["params"].update(lam=99.0))
    return cells["clipfit"] / "result.json", "is not the hash of its config and manifest"


def _edit_manifest(cells):
    edit_json(cells["coop"] / "result.json", lambda r: r["data"].update(manifest_sha256="0" * 64))
    return cells["coop"] / "result.json", "is not the hash of its config and manifest"


def _truncate(cells):
    path = cells["coop"] / "result.json"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path, "not valid JSON, truncated or corrupt"


def _empty(cells):
    (cells["zeroshot"] / "result.json").write_text("")
    return cells["zeroshot"] / "result.json", "empty file"


def _schema(cells):
    edit_json(cells["zeroshot"] / "result.json", lambda r: r.update(schema_version=3))
    return cells["zeroshot"] / "result.json", "schema_version 3 is not supported (this bench reads 1, 2)"


def _flip_artifact_byte(cells):
    path = cells["clipfit"] / "trainable.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path, "artifact trainable: sha256"


def _missing_artifact(cells):
    (cells["coop"] / "trainable.safetensors").unlink()
    return cells["coop"] / "trainable.safetensors", "artifact trainable recorded in result.json is missing"


def _escaping_artifact(cells):
    edit_json(cells["coop"] / "result.json", lambda r: r["artifacts"]["trainable"].update(path="../x.safetensors"))
    return cells["coop"] / "result.json", "leaves the cell folder"


def _temp_file(cells):
    path = cells["coop"] / f".result.json.{os.getpid()}.tmp"
    path.write_text('{"schema_version": 1, "cel')
    return path, "leftover temp file"


def _checkpoint_temp_file(cells):
    (cells["coop"] / "ckpt").mkdir()
    path = cells["coop"] / "ckpt" / ".state.safetensors.tmp4242"
    path.write_bytes(b"\0" * 10)
    (cells["coop"] / "result.json").unlink()                              # an interrupted cell
    return path, "leftover temp file"


def _orphaned_checkpoint(cells):
    (cells["clipfit"] / "ckpt").mkdir()
    (cells["clipfit"] / "ckpt" / "state.safetensors").write_bytes(b"x")
    return cells["clipfit"] / "ckpt", "orphaned checkpoint beside a completed result"


def _moved(cells):
    target = cells["coop"].parent.parent / "clipfit" / cells["coop"].name     # copied into the wrong method folder
    shutil.copytree(cells["coop"], target)
    return target / "result.json", "but its config and cell id belong in runs/fewshot/toy/coop/"


def _renamed(cells):
    target = cells["coop"].with_name("0123456789abcdef")
    cells["coop"].rename(target)
    return target / "result.json", "belong in runs/fewshot/toy/coop/"


def _bad_sweep(cells):
    path = next((cells["coop"].parents[4] / "sweeps").glob("*.json"))
    path.write_text(path.read_text()[:20])
    return path, "sweep file is not a readable JSON object"


@pytest.mark.parametrize("tamper", [_edit_config, _edit_manifest, _truncate, _empty, _schema, _flip_artifact_byte,
                                    _missing_artifact, _escaping_artifact, _temp_file, _checkpoint_temp_file,
                                    _orphaned_checkpoint, _moved, _renamed, _bad_sweep], ids=lambda f: f.__name__[1:])
def test_each_tampering_is_one_problem_line(swept, capsys, tamper):
    root, cells = swept
    path, message = tamper(cells)
    code, lines = verify(root, capsys)
    problems = [line for line in lines[:-1] if ": note: " not in line]
    assert code == 1, lines
    assert len(problems) == 1 and problems[0].startswith(f"{path}: ") and message in problems[0], lines
    assert ": 1 problem" in lines[-1]
    capsys.readouterr()
    assert main(["status", str(root)]) == 0
    assert f"verify: 1 problem (`bench verify {root}` lists them)" in capsys.readouterr().out


def test_resumable_state_and_stale_locks_are_notes_not_problems(swept, capsys):
    root, cells = swept
    edit_json(cells["coop"] / "result.json", lambda r: r.update(status="failed", error={"type": "X", "message": ""}))
    (cells["coop"] / "ckpt").mkdir()
    (cells["clipfit"] / FILE_NAME).write_text(json.dumps({"host": "gone-node", "pid": 1, "heartbeat": 0}))
    os.utime(cells["clipfit"] / FILE_NAME, (0, 0))
    code, lines = verify(root, capsys)
    assert code == 0, lines
    assert lines[0].startswith(f"{cells['clipfit'] / FILE_NAME}: note: stale lock file (heartbeat of gone-node pid 1 is")
    assert lines[0].endswith("s old (stale after 300 s)); the next run takes it over")
    assert lines[1] == f"{cells['coop'] / 'ckpt'}: note: resumable checkpoint of a failed cell (a rerun resumes from it)"
    assert lines[2].endswith(": clean (2 notes)")


def test_a_running_cell_is_left_alone(swept, capsys):
    root, cells = swept
    (cells["coop"] / "ckpt").mkdir()
    (cells["coop"] / ".result.json.1.tmp").write_text("{")
    with cell_lock(cells["coop"]) as got:                                 # e.g. a --force rerun in progress
        assert got
        assert verify_tree(root).findings == []
    assert len(verify_tree(root).problems) == 2


def test_temp_files_outside_cells_get_a_grace_period(swept):
    root, _ = swept
    fresh, old = root / "LEADERBOARD.md.tmp", root / "features" / ".abc.safetensors.tmp77"
    fresh.write_text("x")
    old.write_text("x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert [(f.path, f.problem) for f in verify_tree(root).findings] == [(old, True)]


def test_hashes_can_be_skipped_and_roots_given_either_way(swept, capsys):
    root, cells = swept
    _flip_artifact_byte(cells)
    assert verify(root, capsys, "--no-hashes")[0] == 0
    capsys.readouterr()
    assert main(["verify", "--results", str(root)]) == 1
    assert main(["verify", str(root), "--results", str(root)]) == 1
    capsys.readouterr()
    assert main(["verify", str(root), "--results", str(root / "other")]) == 2
    assert main(["verify", str(root / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "two results roots" in err[0] and "does not exist" in err[1]



def test_a_rerun_removes_what_killed_writes_left(swept, capsys, monkeypatch):
    """SIGKILL during an atomic write leaves its temporary file: the cell's next attempt (holding the cell lock)
    removes those in its folder, and recording a sweep removes shared ones past the grace period."""
    from bench import cards, grid

    root, cells = swept
    killed = cells["clipfit"] / ".predictions.npz.4242.tmp"
    killed.write_bytes(b"half")
    (cells["clipfit"] / "result.json").unlink()                  # killed before its result was written
    old, young = root / "features" / ".abc.safetensors.4242.tmp", root / "features" / ".def.safetensors.4343.tmp"
    for p in (old, young):
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert len(verify_tree(root).problems) >= 2

    monkeypatch.setenv("BENCH_CARDS_PATH", str(SWEEP_INPUTS["cards"]))
    cards.clear_caches()
    grid.dataset_splits.cache_clear()
    try:
        assert main(["run", "--suite", "toy", "--data-root", str(SWEEP_INPUTS["data"]), "--results", str(root),
                     "--no-leaderboard", "--methods", "zeroshot,clipfit,coop", "--datasets", "toy", "--shots", "1",
                     "--seeds", "1", *FAST]) == 0
    finally:
        cards.clear_caches()
        grid.dataset_splits.cache_clear()
    assert (cells["clipfit"] / "result.json").exists() and not killed.exists()
    assert not old.exists() and young.exists()                    # a young one may be a write in progress
    assert [f.path for f in verify_tree(root).findings] == []


V1_TREE = Path(__file__).parent / "data" / "results_v1"     # written by bench at schema 1 (zero-shot, ClipFit on toy)


def test_a_version_1_tree_verifies_by_its_own_identity_rule(tmp_path, capsys):
    root = tmp_path / "r"
    shutil.copytree(V1_TREE, root)
    code, lines = verify(root, capsys)
    assert code == 0 and lines == [f"2 results checked under {root}: clean"]
    clipfit = next((root / "runs").rglob("clipfit/*/result.json"))
    edit_json(clipfit, lambda r: r["config"]["train"].update(eval_batch_size=7))   # hashed at schema 1
    code, lines = verify(root, capsys)
    assert code == 1 and "is not the hash of its config and manifest" in lines[0]


def test_execution_settings_can_change_without_breaking_a_version_2_id(swept, capsys):
    root, cells = swept
    edit_json(cells["clipfit"] / "result.json", lambda r: r["config"]["train"].update(eval_batch_size=7, num_workers=3))
    assert verify(root, capsys)[0] == 0
    edit_json(cells["clipfit"] / "result.json", lambda r: r["config"]["train"].update(precision="bf16"))
    assert verify(root, capsys)[0] == 1
