"""Cards: every shipped card loads; the override rules give each paper's settings; precedence; bad input."""

from __future__ import annotations

import dataclasses

import pytest

from bench import cards
from bench.config import parse_sets, resolve
from bench.errors import BenchError

COOP11 = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
          "sun397", "dtd", "eurosat", "ucf101"]


def test_all_dataset_cards_load_with_reference_templates():
    names = cards.dataset_names()
    for n in COOP11 + ["imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]:
        assert n in names
        assert cards.dataset_card(n).template.count("{}") == 1
    assert cards.dataset_card("dtd").template == "{} texture."
    assert cards.dataset_card("eurosat").template == "a centered satellite photo of {}."
    assert cards.dataset_card("food101").template == "a photo of {}, a type of food."
    assert cards.dataset_card("ucf101").template == "a photo of a person doing {}."
    assert cards.dataset_card("eurosat").classname_fixes["SeaLake"] == "Sea or Lake"
    assert cards.dataset_card("caltech101").classname_fixes["Faces"] == "face"
    assert cards.suite("coop11")["datasets"] == COOP11


def test_method_card_params_match_the_method_dataclasses():
    from bench.methods import METHODS

    for name in cards.method_names():
        cls = METHODS.get(name)
        valid = {f.name for f in dataclasses.fields(cls.Params)}
        assert set(cards.method_card(name).params) <= valid, name


def test_clipfit_overrides_follow_the_readme():
    p, t = resolve("clipfit", "oxford_pets", "fewshot", 16)
    assert (p["lam"], t.epochs, t.lr, t.batch_size, t.optimizer, t.weight_decay) == (2.0, 100, 0.002, 32, "sgd", 5e-4)
    assert resolve("clipfit", "dtd", "fewshot", 1)[0]["lam"] == 8.0
    assert resolve("clipfit", "sun397", "fewshot", 4)[0]["lam"] == 8.0
    assert resolve("clipfit", "eurosat", "base2new", 16)[0]["lam"] == 8.0
    assert resolve("clipfit", "imagenet", "fewshot", 16)[1].epochs == 10
    assert resolve("clipfit", "food101", "base2new", 16)[1].epochs == 10


def test_coop_epochs_by_shots_and_base2new_init():
    assert [resolve("coop", "dtd", "fewshot", k)[1].epochs for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert resolve("coop", "imagenet", "fewshot", 16)[1].epochs == 50
    p, t = resolve("coop", "dtd", "base2new", 16)
    assert p["ctx_init"] == "a photo of a" and t.epochs == 200


def test_lora_budget_and_schedule():
    p, t = resolve("lora", "dtd", "fewshot", 4)
    assert (p["r"], p["alpha"], p["dropout"], list(p["targets"])) == (2, 1.0, 0.25, ["q", "k", "v"])
    assert (t.optimizer, t.lr, t.weight_decay, t.schedule, t.min_lr) == ("adamw", 2e-4, 1e-2, "cosine_iter", 1e-6)
    assert t.total_iters(4, iters_per_epoch=3) == 2000


def test_precedence_card_suite_cli():
    suite = {"train": {"epochs": 7}, "method_settings": {"clipfit": {"lam": 3.0}}, "input": {"rrc_scale": [0.5, 1.0]}}
    p, t = resolve("clipfit", "dtd", "fewshot", 16, suite)
    assert (p["lam"], t.epochs, t.rrc_scale) == (3.0, 7, (0.5, 1.0))
    p, t = resolve("clipfit", "dtd", "fewshot", 16, suite, parse_sets(["lam=0", "epochs=1"]))
    assert (p["lam"], t.epochs) == (0, 1)      # 0 counts as set


def test_unknown_setting_and_names_are_one_line_errors():
    with pytest.raises(BenchError, match="unknown setting 'lamda'.*valid:"):
        resolve("clipfit", "dtd", "fewshot", 16, sets={"lamda": 1})
    with pytest.raises(BenchError, match="method 'copo' is unknown; did you mean 'coop'"):
        cards.method_card("copo")
    with pytest.raises(BenchError, match="dataset 'eurosta' is unknown; did you mean 'eurosat'"):
        cards.dataset_card("eurosta")
    with pytest.raises(BenchError, match="expects key=value"):
        parse_sets(["lam"])


def test_malformed_card_names_file_and_line(tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "broken.yaml").write_text("name: broken\ntemplate: [unclosed\n")
    monkeypatch.setenv("BENCH_CARDS_PATH", str(tmp_path))
    cards.clear_caches()
    with pytest.raises(BenchError, match=r"malformed YAML in .*broken.yaml line \d+"):
        cards.dataset_card("broken")
    (tmp_path / "datasets" / "extra.yaml").write_text("name: extra\nkind: split_json\nfolder: x\ntemplate: '{}'\n"
                                                       "title: X\nversion: 1\ncolour: red\n")
    cards.clear_caches()
    with pytest.raises(BenchError, match="unknown key.*colour"):
        cards.dataset_card("extra")


def test_a_preset_is_a_card_only(tmp_path, monkeypatch, capsys):
    """A card naming an existing class is a method: the registry, its Params (read without torch), `bench validate`
    and the build see it; a card that extends another inherits its implementation."""
    from bench.cli import main
    from bench.methods import METHODS, method_fields

    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "clipfit_lam4.yaml").write_text("name: clipfit_lam4\ntitle: ClipFit λ 4\nversion: 1\n"
                                                            "extends: clipfit\nparams: {lam: 4.0}\n")
    (tmp_path / "methods" / "text_bitfit.yaml").write_text(
        "name: text_bitfit\ntitle: BitFit (text)\nversion: 1\nextends: bitfit\n"
        "implementation: bench.methods.selective:SelectiveTuning\nparams: {image: none}\n")
    monkeypatch.setenv("BENCH_CARDS_PATH", str(tmp_path))
    cards.clear_caches()
    assert {"clipfit_lam4", "text_bitfit"} <= set(METHODS.names())
    assert METHODS.target("clipfit_lam4") == "bench.methods.clipfit:ClipFit"          # inherited through extends
    assert set(method_fields("text_bitfit")) == {"text", "image", "lam", "templates"}
    assert resolve("text_bitfit", "dtd", "fewshot", 1)[0] == {"text": "bias", "image": "none", "lam": 0.0,
                                                              "templates": {}}
    assert resolve("clipfit_lam4", "oxford_pets", "fewshot", 1)[0]["lam"] == 4.0
    assert main(["validate"]) == 0

    (tmp_path / "methods" / "ghost.yaml").write_text("name: ghost\ntitle: G\nversion: 1\nextends: clipfit\n"
                                                     "implementation: bench.methods.clipfit:Ghost\n")
    (tmp_path / "methods" / "bad.yaml").write_text("name: bad\ntitle: B\nversion: 1\nextends: clipfit\n"
                                                   "implementation: clipfit\n")
    cards.clear_caches()
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "ghost.yaml: implementation bench.methods.clipfit:Ghost names no class" in out
    assert "bad.yaml: implementation 'clipfit' is not 'package.module:Class'" in out
    assert "bad" not in METHODS.names() and "ghost" in METHODS.names()


def test_one_name_with_two_implementations_is_an_error(tmp_path, monkeypatch):
    from bench.registry import Registry

    registry = Registry("method", discover=lambda: {"coop": "bench.methods.coop:CoOp", "x": "m:X"})
    registry.register_lazy("coop", "bench.methods.maple:MaPLe")
    with pytest.raises(BenchError, match="method 'coop' is registered twice"):
        registry.names()
    registry = Registry("method", discover=lambda: {"coop": "bench.methods.coop:CoOp"})
    registry.register_lazy("coop", "bench.methods.coop:CoOp")
    assert registry.names() == ["coop"]
