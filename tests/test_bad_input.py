"""Bad input, systematically: every row of the README table "Bad input and the one-line error it gets" is a case
here, run through the CLI on a generated toy world; the test checks the message the README shows.

Kinds: `error` — the command exits 2 with one line `error: <message>` before any cell runs; `verify` — `bench
verify` reports `<path>: <message>` and exits 1; `cell` — the cell is recorded as failed with `<type>: <message>`
(what `bench status --failed` prints) and the sweep goes on. Paths are shown relative to the test's folder.

    python tests/test_bad_input.py        # print the table rows from the actual messages (to update the README)
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from toydata import make_toy_world  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FAST = ["--set", "epochs=1", "--set", "batch_size=8"]


@dataclass
class World:
    tmp: Path

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def cards(self) -> Path:
        return self.tmp / "cards"

    def split(self, folder: str = "toy") -> Path:
        return self.data / folder / "split_toy.json"

    def edit_split(self, change, folder: str = "toy") -> None:
        raw = json.loads(self.split(folder).read_text())
        change(raw)
        self.split(folder).write_text(json.dumps(raw))

    def card(self, name: str, text: str) -> None:
        (self.cards / "datasets" / f"{name}.yaml").write_text(text)


def plan(*extra: str) -> list[str]:
    return ["plan", "--suite", "toy", "--data-root", "data", "--methods", "clipfit", "--shots", "1", "--seeds", "1",
            "--results", "r", *extra]


def run(*extra: str, methods: str = "clipfit") -> list[str]:
    return ["run", "--suite", "toy", "--data-root", "data", "--methods", methods, "--datasets", "toy", "--shots", "1",
            "--seeds", "1", "--results", "r", "--no-leaderboard", *FAST, *extra]


def _jpeg(path: Path, cut: int | None = None) -> None:
    arr = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype("uint8")
    Image.fromarray(arr).save(path, format="JPEG", quality=90)
    if cut:
        path.write_bytes(path.read_bytes()[:cut])


def _first_test_image(w: World) -> Path:
    return w.data / "toy" / "images" / json.loads(w.split().read_text())["test"][0][0]


def _card_text(name: str, **changes) -> str:
    base = {"name": name, "title": "Evil", "version": 1, "kind": "split_json", "folder": "toy",
            "image_dir": "images", "split_file": "split_toy.json", "template": "a photo of a {}."}
    base.update(changes)
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in base.items())


# ---- set-up steps: each changes the world and returns what to run ----

def card(text: str):
    return lambda w: w.card("evil", text) or ("error", plan("--datasets", "evil"))


def split(change, kind: str = "error"):
    return lambda w: w.edit_split(change) or (kind, plan())


def write(name: str, text: str, kind: str, argv: list[str]):
    return lambda w: (w.tmp / name).write_text(text) and (kind, argv)


def method_card(w):
    (w.cards / "methods").mkdir(exist_ok=True)
    (w.cards / "methods" / "clipfit.yaml").write_text(
        "name: clipfit\ntitle: ClipFit\nversion: 1\npaper: x\nparams: {lam: high}\ntrain: {}\n")
    return "error", plan()


def not_an_image(w):
    _first_test_image(w).write_bytes(b"<html>not an image</html>")
    return "cell", run(methods="zeroshot")


def truncated_jpeg(w):
    path = _first_test_image(w).with_suffix(".jpg")
    _jpeg(path, cut=700)                                    # a JPEG cut short in its scan data
    w.edit_split(lambda raw: raw["test"][0].__setitem__(0, str(path.relative_to(w.data / "toy" / "images"))))
    return "cell", run(methods="zeroshot")


def argv(kind: str, args: list[str]):
    return lambda w: (kind, args)


def _set(item: str):
    return argv("error", plan("--set", item))


def _rm_split(w):
    w.split().unlink()
    return "error", plan()


GRID = ["plan", "--config", "grid.yaml", "--suite", "toy", "--data-root", "data", "--results", "r"]
SLURM = ["--executor", "slurm", "--profile", "cluster.yaml"]
CASES = {   # description (the README's first column): (example shown there, set-up)
    "unknown method": ("`--methods copo`", argv("error", plan("--methods", "copo"))),
    "unknown dataset": ("`--datasets toyy`", argv("error", plan("--datasets", "toyy"))),
    "unknown suite": ("`--suite coop12`", argv("error", ["plan", "--suite", "coop12", "--data-root", "data"])),
    "unknown backbone": ("`--backbone ViT-B-61`", argv("error", run("--backbone", "ViT-B-61"))),
    "`--set` name no selected method has": ("`--methods zeroshot,clipfit --set lamda=4`",
                                            argv("error", plan("--methods", "zeroshot,clipfit", "--set", "lamda=4"))),
    "`../` in a dataset name": ("`--datasets ../toy`", argv("error", plan("--datasets", "../toy"))),
    "`../` in a method name": ("`--methods ../coop`", argv("error", plan("--methods", "../coop"))),
    "card whose `name` is not its file name": ("`evil.yaml` says `name: ../evil`", card(_card_text("../evil"))),
    "`../` in a card's folder": ("`folder: ../../etc`", card(_card_text("evil", folder="../../etc"))),
    "`../` in a split file's image path": ('`["../../../etc/passwd", 0, "red_square"]`',
                                           split(lambda raw: raw["train"].__setitem__(
                                               3, ["../../../etc/passwd", 0, "red_square"]))),
    "absolute image path in a split file": ('`["/etc/passwd", 0, "red_square"]`',
                                            split(lambda raw: raw["test"].__setitem__(
                                                0, ["/etc/passwd", 0, "red_square"]))),
    "malformed card YAML": ("`template: [unclosed`", card("name: evil\ntemplate: [unclosed\n")),
    "card that is not a mapping": ("a YAML list", card("- name: evil\n")),
    "card value of the wrong type": ("`version: one`", card(_card_text("evil", version="one"))),
    "unknown card key": ("`colour: red`", card(_card_text("evil", colour="red"))),
    "method card parameter of the wrong type": ("`params: {lam: high}`", method_card),
    "malformed split JSON": ("a file cut short", write("data/toy/split_toy.json", '{"train": [["a.png", 0, "r"],',
                                                       "error", plan())),
    "split file that is not an object": ("`[]`", write("data/toy/split_toy.json", "[]", "error", plan())),
    "split entry that is not `[path, label, classname]`": ('`["x.png", "zero", "red_square"]`', split(
        lambda raw: raw["train"].__setitem__(3, ["x.png", "zero", "red_square"]))),
    "missing split file": ("", _rm_split),
    "missing data root": ("`--data-root nowhere`", argv("error", plan("--data-root", "nowhere"))),
    "malformed grid YAML (`--config`)": ("`methods: [clipfit`", write("grid.yaml", "methods: [clipfit\n", "error", GRID)),
    "grid file that is not a mapping": ("`- clipfit`", write("grid.yaml", "- clipfit\n", "error", GRID)),
    "unknown grid key": ("`method: [clipfit]`", write("grid.yaml", "method: [clipfit]\n", "error", GRID)),
    "grid value of the wrong type": ("`seeds: [one, two]`", write("grid.yaml", "seeds: [one, two]\n", "error", GRID)),
    "`--set` number that is not a number": ("`--set lr=fast`", _set("lr=fast")),
    "`--set` method parameter of the wrong type": ("`--set lam=abc`", _set("lam=abc")),
    "`--set` batch size of 0": ("`--set batch_size=0`", _set("batch_size=0")),
    "`--set` negative epochs": ("`--set epochs=-3`", _set("epochs=-3")),
    "`--set` value not among the choices": ("`--set precision=fp8`", _set("precision=fp8")),
    "`--set` pair out of order": ("`--set rrc_scale=[0.9,0.5]`", _set("rrc_scale=[0.9, 0.5]")),
    "`--set` value that is not YAML": ("`--set rrc_scale=[0.5,1`", _set("rrc_scale=[0.5, 1")),
    "`--set` without `=`": ("`--set lam`", _set("lam")),
    "unknown SLURM profile": ("`--profile nosuch`", argv("error", plan("--executor", "slurm", "--profile", "nosuch"))),
    "SLURM profile value out of range": ("`timeout_min: -5`", write("cluster.yaml", "timeout_min: -5\n", "error",
                                                                   plan(*SLURM))),
    "malformed SLURM profile YAML": ("`partition: [gpu`", write("cluster.yaml", "partition: [gpu\n", "error",
                                                               plan(*SLURM))),
    "class without training images (empty class)": ("no train entry with label 2", split(
        lambda raw: raw.__setitem__("train", [e for e in raw["train"] if e[1] != 2]))),
    "dataset without test images": ('`"test": []`', split(lambda raw: raw.__setitem__("test", []))),
    "labels with a gap": ("labels 0, 1, 2, 3, 5", split(
        lambda raw: [e.__setitem__(1, 5) for part in raw.values() for e in part if e[1] == 4])),
    "shots larger than any class": ("`--shots 50` (6 images a class)", argv("error", plan("--shots", "50"))),
    "weights file that is not a checkpoint": ("`--pretrained junk.pt`", write(
        "junk.pt", "this is not a checkpoint", "error", run("--backbone", "bench-tiny", "--pretrained", "junk.pt"))),
    "missing weights file": ("`--pretrained w.pt`", argv("error", run("--backbone", "bench-tiny", "--pretrained",
                                                                      "w.pt"))),
    "malformed architecture JSON": ("`--backbone arch.json`", write(
        "arch.json", '{"embed_dim": 64,', "error", run("--backbone", "arch.json", "--pretrained", "none"))),
    "CPU workers below 1": ("`--workers 0`", argv("error", run("--workers", "0"))),
    "results root that is a file": ("`--results r` (a file)", write("r", "a file\n", "error", run())),
    "results root that is not writable": ("`--results taken/r` (`taken` a file)",
                                          write("taken", "a file\n", "error", run("--results", "taken/r"))),
    "read verb on a missing results folder": ("`bench status --results nowhere`",
                                              argv("error", ["status", "--results", "nowhere"])),
    "image that is not an image": ("HTML saved as `.png`", not_an_image),
    "truncated JPEG": ("a JPEG cut in its scan data", truncated_jpeg),
    "truncated or corrupt result.json": ("`bench verify`", argv("verify", "truncate")),
    "sweep file that is not JSON": ("`bench verify`", argv("verify", "sweep")),
}


def message(w: World, kind: str, argv, capsys) -> str:
    """Run one case and return its one-line message, with the test folder's path removed."""
    from bench.cli import main

    capsys.readouterr()
    if kind == "error":
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err, err
        assert len(err) == 1 and err[0].startswith("error: "), err
        text = err[0][len("error: "):]
    elif kind == "cell":
        assert main(argv) == 1
        res = [json.loads(p.read_text()) for p in (w.tmp / "r" / "runs").rglob("result.json")]
        assert len(res) == 1 and res[0]["status"] == "failed", res
        text = f"{res[0]['error']['type']}: {res[0]['error']['message']}"
    else:
        root = _verify_tree(w, argv)
        assert main(["verify", str(root)]) == 1
        lines = capsys.readouterr().out.strip().splitlines()
        text = lines[0]
    return text.replace(f"{w.tmp.resolve()}/", "").replace(f"{w.tmp}/", "").replace(f"{REPO}/", "")


def _verify_tree(w: World, what: str) -> Path:
    """A results tree with a truncated result.json, or a sweep file cut short."""
    from result_fixtures import write_result, write_sweep

    root = w.tmp / "r"
    if what == "truncate":
        path = write_result(root, "clipfit", "toy")
        path.write_text(path.read_text()[:40])
    else:
        write_sweep(root, []).write_text('{"sweep_id": "s1", "cells": [')
    return root


def readme_rows() -> dict[str, str]:
    """description → message of the README table (between its markers)."""
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- bad-input-table -->")[1]
    rows = {}
    for line in [ln for ln in block.splitlines() if ln.startswith("|")][2:]:     # after the header and its rule
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3:
            rows[cells[0]] = cells[2].strip("`").replace("\\|", "|")
    return rows


@pytest.fixture
def world(tmp_path, monkeypatch):
    from bench import cards, grid

    make_toy_world(tmp_path)
    monkeypatch.setenv("BENCH_CARDS_PATH", str(tmp_path / "cards"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))     # no user profiles
    monkeypatch.delenv("BENCH_PROFILES_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    cards.clear_caches()
    grid.dataset_splits.cache_clear()
    yield World(tmp_path)
    grid.dataset_splits.cache_clear()


@pytest.mark.parametrize("description", list(CASES))
def test_bad_input_gets_the_readme_message(world, capsys, description):
    kind, argv = CASES[description][1](world)
    actual = message(world, kind, argv, capsys)
    rows = readme_rows()
    assert description in rows, f"README table lacks the row {description!r}; actual message: {actual}"
    shown = rows[description]
    if shown.endswith("…"):
        assert actual.startswith(shown[:-1]), (shown, actual)
    else:
        assert actual == shown, (shown, actual)


def test_the_readme_table_has_no_untested_row():
    assert set(readme_rows()) == set(CASES)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_results_root(world, capsys):
    (world.tmp / "ro").mkdir()
    (world.tmp / "ro").chmod(0o500)
    try:
        text = message(world, "error", run("--results", "ro"), capsys)
    finally:
        (world.tmp / "ro").chmod(0o700)
    assert text == "results root ro is not writable (Permission denied); pass --results DIR"


if __name__ == "__main__":                          # print the README rows from the actual messages
    import tempfile

    class _Capsys:
        def __init__(self):
            import io

            self.out, self.err = io.StringIO(), io.StringIO()

        def readouterr(self):
            out, err = self.out.getvalue(), self.err.getvalue()
            self.out.seek(0), self.out.truncate(), self.err.seek(0), self.err.truncate()
            return type("R", (), {"out": out, "err": err})()

    from contextlib import redirect_stderr, redirect_stdout

    from bench import cards, grid

    for description, (example, case) in CASES.items():
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            make_toy_world(tmp)
            os.environ["BENCH_CARDS_PATH"] = str(tmp / "cards")
            os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
            os.environ.pop("BENCH_PROFILES_PATH", None)
            os.chdir(tmp)
            cards.clear_caches()
            grid.dataset_splits.cache_clear()
            cap = _Capsys()
            w = World(tmp)
            kind, argv = case(w)
            with redirect_stdout(cap.out), redirect_stderr(cap.err):
                text = message(w, kind, argv, cap)
            shown = text.replace("|", "\\|")
            print(f"| {description} | {example} | `{shown}` |")
