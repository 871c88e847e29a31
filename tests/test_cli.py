"""CLI: light verbs never import torch; validate lists what is missing; user errors are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.cli import main

NO_TORCH = ("import sys, runpy; sys.argv = ['bench'] + {argv!r}\n"
            "try:\n    runpy.run_module('bench', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "bad = [m for m in ('torch', 'open_clip', 'pandas') if m in sys.modules]\n"
            "print('HEAVY:' + ','.join(bad))")


@pytest.mark.parametrize("argv", [["--help"], ["ls", "methods"], ["ls", "datasets"], ["ls", "backbones"],
                                  ["validate"], ["run", "--help"], ["plan", "--help"],
                                  ["analyze", "--help"], ["status", "--help"], ["verify", "--help"],
                                  ["compare", "--help"], ["leaderboard", "--help"], ["aggregate", "--help"]])
def test_light_verbs_do_not_import_torch(argv):
    out = subprocess.run([sys.executable, "-c", NO_TORCH.format(argv=argv)], capture_output=True, text=True,
                         timeout=60).stdout
    assert out.strip().endswith("HEAVY:"), out[-500:]


def test_plan_does_not_import_torch(toy, tmp_path):
    argv = ["plan", "--suite", "toy", "--data-root", str(toy), "--methods", "clipfit", "--shots", "1",
            "--seeds", "1", "--results", str(tmp_path / "r")]
    out = subprocess.run([sys.executable, "-c", NO_TORCH.format(argv=argv)], capture_output=True, text=True,
                         timeout=60).stdout
    assert "2 cells" in out and out.strip().endswith("HEAVY:"), out[-800:]


def test_validate_empty_root_lists_all_eleven(tmp_path, capsys):
    assert main(["validate", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    missing = [line for line in out.splitlines() if line.startswith("MISSING")]
    assert len(missing) == 11
    assert f"{tmp_path}/oxford_pets" in out and "split_zhou_OxfordPets.json" in out
    assert "0/11 datasets ready" in out


def test_validate_ok_on_generated_tree(toy, capsys):
    assert main(["validate", "--data-root", str(toy), "--datasets", "toy,toy2"]) == 0
    assert "ok       toy: 5 classes" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["run", "--methods", "copo", "--datasets", "toy", "--data-root", "{root}"], "did you mean 'coop'"),
    (["run", "--methods", "coop", "--datasets", "toyy", "--data-root", "{root}"], "did you mean 'toy'"),
    (["run", "--methods", "coop", "--datasets", "toy", "--data-root", "{root}", "--shots", "0"], "shots must be positive"),
    (["run", "--methods", "coop", "--datasets", "toy", "--data-root", "{root}/missing"], "does not exist"),
    (["run", "--methods", "coop", "--datasets", "toy", "--backbone", "ViT-B-61", "--data-root", "{root}",
      "--shots", "1", "--seeds", "1", "--results", "{root}/r"], "backbone 'ViT-B-61' is unknown; did you mean"),
    (["run", "--methods", "coop", "--datasets", "toy", "--backbone", "ViT-B-32", "--pretrained", "openai",
      "--data-root", "{root}", "--shots", "1", "--seeds", "1", "--results", "{root}/r"],
     "cannot fetch pretrained weights 'openai' for ViT-B-32"),
    (["run", "--methods", "coop", "--datasets", "toy", "--backbone", "bench-tiny", "--pretrained", "{root}/w.pt",
      "--data-root", "{root}", "--shots", "1", "--seeds", "1", "--results", "{root}/r"], "w.pt does not exist"),
    (["plan", "--methods", "coop", "--data-root", "{root}", "--results", "{root}/r"], "no datasets to run: pass --datasets"),
    (["plan", "--protocol", "xd", "--data-root", "{root}", "--results", "{root}/r"], "or --targets"),
])
def test_bad_input_is_a_one_line_error(toy, capsys, argv, message):
    argv = [a.format(root=toy) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_shots_must_be_integers(capsys):
    with pytest.raises(SystemExit):
        main(["plan", "--shots", "1.5"])
    assert "expected comma-separated integers" in capsys.readouterr().err


def test_naming_only_mini_datasets_implies_the_mini_world(tmp_path, monkeypatch):
    from argparse import Namespace

    from bench.cli import _grid_args
    from bench.errors import BenchError

    monkeypatch.setattr(_grid_args, "mini_data_root", lambda build: tmp_path / "mini-data")
    blank = dict(config=None, methods=None, suite=None, shots=None, seeds=None, protocol=None, source=None,
                 targets=None, backbone=None, pretrained=None, activation=None, data_root=None, sets=[])
    grid = _grid_args.build_grid(Namespace(**blank, datasets=["mini_shapes", "mini_digits"]), prepare_world=False)
    assert (grid.suite, grid.backbone, grid.pretrained) == ("mini", "bench-mini", "mini-world")
    assert grid.datasets == ["mini_shapes", "mini_digits"] and grid.data_root == str(tmp_path / "mini-data")
    with pytest.raises(BenchError, match="--data-root is required"):        # a real dataset still needs its root
        _grid_args.build_grid(Namespace(**blank, datasets=["mini_shapes", "dtd"]), prepare_world=False)


@pytest.mark.parametrize("argv,message", [
    (["run", "--methods", "nosuchmethod"], "method 'nosuchmethod' is unknown"),
    (["run", "--datasets", "mini_shapez"], "dataset 'mini_shapez' is unknown; did you mean 'mini_shapes'"),
    (["run", "--set", "epochs=abc"], "epochs='abc' is not an integer"),
    (["run", "--set", "lamda=4"], "unknown setting 'lamda'"),
    (["run", "--datasets", "mini_shapes", "--backbone", "ViT-Z-99"], "backbone 'ViT-Z-99' is unknown; did you mean"),
    (["run", "--executor", "slurm", "--profile", "nosuch"], "nosuch"),
])
def test_bad_input_fails_before_the_mini_world_is_built(tmp_path, monkeypatch, capsys, argv, message):
    """On a fresh cache a bad name, flag or setting is a one-line error at once: no world build, no lock wait, no
    demand for --data-root, no results folder."""
    from bench.mini import world

    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    built = []
    monkeypatch.setattr(world, "ensure_world", lambda *a, **k: built.append(1) or pytest.fail("world build started"))
    code = main([*argv, "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert "--data-root" not in err[0]
    assert not built and not cache.exists() and not (tmp_path / "r").exists()


def test_a_good_run_still_asks_for_the_world(tmp_path, monkeypatch):
    """The checks above do not short-circuit a valid grid: the world is asked for once the checks pass."""
    from bench.cli import _grid_args

    asked = []
    monkeypatch.setattr(_grid_args, "mini_data_root", lambda build: asked.append(build) or tmp_path)
    from argparse import Namespace

    blank = dict(config=None, methods=["coop"], suite=None, shots=None, seeds=None, protocol=None, source=None,
                 targets=None, backbone=None, pretrained=None, activation=None, data_root=None, sets=[],
                 datasets=None)
    checks = []
    grid = _grid_args.build_grid(Namespace(**blank), prepare_world=True, before_data=lambda g: checks.append(g.regime))
    assert asked == [True] and checks == ["default"] and grid.data_root == str(tmp_path)
