"""Settings are coerced to their field's type and range-checked before any cell runs; a grid-wide --set applies
to the methods that have it; method types are read from the method's source (bench plan stays torch-free)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from test_cli import NO_TORCH

from bench import config, settings
from bench.config import LIMITS, TrainConfig, parse_sets, resolve
from bench.errors import BenchError
from bench.grid import Grid, expand
from bench.methods import METHODS as _REGISTRY  # the registry package imports no method module

METHODS = _REGISTRY.names()                      # every registered method, the second wave included


def test_a_learning_rate_as_everyone_writes_it_is_a_float():
    params, train = resolve("clipfit", "dtd", "fewshot", 16, sets=parse_sets(["lr=1e-4", "lam=8", "epochs=5.0"]))
    assert train.lr == 1e-4 and isinstance(train.lr, float)
    assert params["lam"] == 8.0 and isinstance(params["lam"], float)
    assert train.epochs == 5 and isinstance(train.epochs, int)


@pytest.mark.parametrize("item,message", [
    ("lr=abc", "--set: lr='abc' is not a number; lr takes a number > 0"),
    ("lr=0", "lr=0 is out of range"),
    ("lam=abc", "--set: lam='abc' is not a number; clipfit's lam takes a number ≥ 0"),
    ("lam=-1", "clipfit's lam takes a number ≥ 0"),
    ("batch_size=0", "--set: batch_size=0 is out of range; batch_size takes an integer ≥ 1"),
    ("batch_size=2.5", "batch_size=2.5 is not an integer"),
    ("batch_size=true", "batch_size=true is not an integer"),
    ("epochs=-3", "--set: epochs=-3 is out of range; epochs takes an integer ≥ 1, or null"),
    ("momentum=1", "momentum takes a number in [0, 1)"),
    ("optimizer=adam", "optimizer takes one of sgd, adamw"),
    ("schedule=linear", "schedule takes one of dassl_cosine, cosine_iter, constant"),
    ("drop_last=maybe", "drop_last takes one of auto, true, false"),
    ("rrc_scale=[0, 1]", "rrc_scale=[0, 1] is out of range"),
    ("rrc_scale=0.5", "rrc_scale=0.5 is not a pair of numbers"),
    ("betas=[0.9, 1.5]", "betas takes a pair of numbers, each in [0, 1)"),
    ("grad_clip=nan", "grad_clip='nan' is not a number"),
    ("lr=null", "lr=null is not allowed"),
])
def test_bad_values_are_one_line_errors(item, message):
    with pytest.raises(BenchError) as err:
        resolve("clipfit", "dtd", "fewshot", 16, sets=parse_sets([item]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_values_that_fit_pass_unchanged():
    params, train = resolve("lora", "dtd", "fewshot", 4, sets=parse_sets(
        ["drop_last=auto", "grad_clip=null", "epochs=null", "targets=[q, v]", "layers=[0, 3]", "template=null",
         "rrc_scale=[0.5, 1]", "precision=bf16"]))
    assert (train.drop_last, train.grad_clip, train.epochs, train.rrc_scale) == ("auto", None, None, (0.5, 1.0))
    assert params["targets"] == ["q", "v"] and params["layers"] == [0, 3] and params["template"] is None
    with pytest.raises(BenchError, match="lora's targets takes a list drawn from q, k, v, o"):
        resolve("lora", "dtd", "fewshot", 4, sets=parse_sets(["targets=[q, x]"]))


def test_every_numeric_training_field_has_a_range_and_the_table_names_only_fields():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(LIMITS) <= names
    numeric = {n for n, f in config.TRAIN_FIELDS.items() if any(m.split("[")[0] in ("int", "float", "tuple")
                                                                  for m in settings._members(f.type))}
    assert numeric - set(LIMITS) == set(), "give each new numeric TrainConfig field a range in bench.config.LIMITS"


def test_defaults_cards_and_suites_fit_their_ranges():
    for name, field in config.TRAIN_FIELDS.items():
        settings.coerce(field, getattr(TrainConfig(), name), "default")
    from bench import cards

    mini = cards.suite("mini")
    for method in METHODS:
        for protocol in ("fewshot", "base2new", "xd", "dg"):
            for dataset in ("dtd", "imagenet", "sun397"):
                resolve(method, dataset, protocol, 16)
                resolve(method, dataset, protocol, 1, suite=mini, only_known=True)


def test_a_new_field_is_type_checked_by_default():
    @dataclasses.dataclass(frozen=True)
    class Grown:                       # what another engineer might add to TrainConfig
        fast: bool = True
        eval_batch_size: int = 500
        compile: bool = False

    fields = settings.dataclass_fields(Grown)
    assert settings.coerce(fields["fast"], "false", "--set") is False
    with pytest.raises(BenchError, match="fast='sometimes' is not true or false"):
        settings.coerce(fields["fast"], "sometimes", "--set")
    with pytest.raises(BenchError, match="eval_batch_size='many' is not an integer"):
        settings.coerce(fields["eval_batch_size"], "many", "--set")


def test_method_types_read_from_source_match_the_dataclasses():
    import importlib

    from bench.methods import METHODS as REGISTRY
    from bench.methods import method_fields

    for method in METHODS:
        read = method_fields(method)
        cls = REGISTRY.get(method)                      # imports torch: this test may
        module = importlib.import_module(cls.__module__)
        real = {f.name: f.type for f in dataclasses.fields(cls.Params)}
        assert {k: f.type for k, f in read.items()} == real, method
        assert {k: f.limit for k, f in read.items() if f.limit is not None} == getattr(module, "LIMITS", {}), method


def test_plan_with_settings_does_not_import_torch(toy, tmp_path):
    argv = ["plan", "--suite", "toy", "--data-root", str(toy), "--methods", "zeroshot,clipfit,lora", "--shots", "1",
            "--seeds", "1", "--results", str(tmp_path / "r"), "--set", "lam=4", "--set", "lr=1e-4",
            "--set", "r=4"]
    out = subprocess.run([sys.executable, "-c", NO_TORCH.format(argv=argv)], capture_output=True, text=True,
                         timeout=60).stdout
    assert "cells" in out and out.strip().endswith("HEAVY:"), out[-800:]


def test_a_method_parameter_applies_to_the_methods_that_have_it(toy):
    grid = Grid(methods=["zeroshot", "clipfit", "lora"], datasets=["toy"], shots=[1], seeds=[1],
                backbone="bench-tiny", pretrained=None, data_root=str(toy), sets={"lam": 8, "ensemble": True, "r": 4})
    params = {c["config"]["method"]: c["config"]["params"] for c in expand(grid)}
    assert params["clipfit"]["lam"] == 8.0 and "lam" not in params["zeroshot"] and "lam" not in params["lora"]
    assert params["zeroshot"]["ensemble"] is True and params["lora"]["r"] == 4
    grid.sets = {"nonsense": 1}
    with pytest.raises(BenchError, match="unknown setting 'nonsense': no selected method .zeroshot, clipfit, lora."):
        expand(grid, with_data=False)
    grid.methods, grid.sets = ["zeroshot", "coop"], {"lam": 8}
    with pytest.raises(BenchError, match="unknown setting 'lam'"):
        expand(grid, with_data=False)


def test_an_integer_and_the_same_float_name_the_same_cell(toy):
    def cell_id(value):
        grid = Grid(methods=["clipfit"], datasets=["toy"], shots=[1], seeds=[1], backbone="bench-tiny",
                    pretrained=None, data_root=str(toy), sets={"lam": value})
        return expand(grid)[0]["cell_id"]

    assert cell_id(8) == cell_id(8.0) == cell_id("8") != cell_id(4)


def test_grid_file_settings_keep_their_yaml_types(toy, tmp_path):
    from argparse import Namespace

    from bench.cli._grid_args import build_grid

    path = tmp_path / "grid.yaml"
    path.write_text("methods: lora\nshots: 1\nseeds: [1]\nset: {template: null, lr: 1.0e-3}\n")
    args = Namespace(config=path, methods=None, datasets=["toy"], suite="toy", shots=None, seeds=None, protocol=None,
                     source=None, targets=None, backbone=None, pretrained=None, activation=None,
                     data_root=str(toy), sets=["lr=1e-4"])
    grid = build_grid(args, prepare_world=False)
    assert grid.file_sets == {"template": None, "lr": 1.0e-3} and grid.sets == {"lr": "1e-4"}   # --set wins
    assert grid.shots == [1] and grid.methods == ["lora"]
    cell = expand(grid)[0]
    assert cell["config"]["params"]["template"] is None and cell["config"]["train"]["lr"] == 1e-4


def test_a_card_without_code_falls_back_to_its_values(tmp_path, monkeypatch):
    from bench import cards

    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "mine.yaml").write_text(
        "name: mine\ntitle: Mine\nversion: 1\npaper: x\nparams: {width: 4, scale: 0.5, name: a, on: true}\n"
        "train: {}\n")
    monkeypatch.setenv("BENCH_CARDS_PATH", str(tmp_path))
    cards.clear_caches()
    params, _ = resolve("mine", "dtd", "fewshot", 1, sets={"width": "8", "scale": 1})
    assert params["width"] == 8 and params["scale"] == 1.0
    with pytest.raises(BenchError, match="mine's width takes an integer or a number"):
        resolve("mine", "dtd", "fewshot", 1, sets={"width": "wide"})
