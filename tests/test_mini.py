"""The mini world: deterministic corpus and suite files, CoOp layout, cards, cache reuse and corrupt-cache rebuild,
and bit-identical content: the tiny world's hashes equal bench's reference ones (so CI catches drift on a new library
version or machine), `bench world --check` says so.

Fast tests use the tiny CI build (64 corpus images, 2 pretraining steps, 2-3 images per split; one build shared by
the module); the full build (about 3 minutes) and the acceptance check on it are marked slow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.mini import suite as S
from bench.mini.corpus import HELD_OUT, make_corpus
from bench.mini.world import TINY, ensure_world, find_world, world_dir

REPO = Path(__file__).resolve().parent.parent


BUILD_MESSAGES: list[str] = []
# A parent process with other numerics than the pinned ones (1 thread, AVX-512 kernels, MKL's default branch)
HOSTILE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO",
               "MKL_DYNAMIC": "TRUE"}


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """A cache holding the tiny world, built once per module (its messages in BUILD_MESSAGES); tests that change
    it copy it first."""
    cache = tmp_path_factory.mktemp("tiny-cache")
    BUILD_MESSAGES.clear()
    ensure_world(cache, seed=0, config=TINY, progress=BUILD_MESSAGES.append)
    return cache


def _copy_cache(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_package_import_is_light():
    code = "import sys, bench.mini; assert 'torch' not in sys.modules and 'open_clip' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_corpus_is_deterministic_and_seeded():
    a, b, c = make_corpus(120, seed=3), make_corpus(120, seed=3), make_corpus(120, seed=4)
    assert a.images.shape == (120, 32, 32, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    assert all(len(caps) == 4 and all(cap.endswith(".") for cap in caps) for caps in a.captions)
    assert {"object", "texture", "digit"} <= set(make_corpus(300, seed=0).kinds)


def test_corpus_never_shows_held_out_pairs_or_left_right():
    corpus = make_corpus(400, seed=0)
    text = " ".join(" ".join(caps) for caps in corpus.captions)
    for color, shape in HELD_OUT:
        assert not re.search(rf"\b{color} {shape}", text), (color, shape)    # word boundary: "checkered square"
    assert " left" not in text and " right" not in text


def test_render_primitives_are_exact():
    """bench's own drawing code: sine to 1e-15, exact polygon areas, identity resize, PNGs any reader decodes."""
    import io

    from PIL import Image

    from bench.mini import render as R

    x = np.linspace(-20, 20, 4001)
    assert np.max(np.abs(R.sin(x) - np.sin(x))) < 1e-14 and np.max(np.abs(R.cos(x) - np.cos(x))) < 1e-14
    square = R.fill_polygon([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)])      # pixels 16..47
    assert square.sum() == 32 * 32 and square[16:48, 16:48].all()
    assert R.fill_polygon([(-0.5, -0.5), (-0.5, 0.5), (0.5, 0.5), (0.5, -0.5)]).sum() == 1024   # either winding
    tri = R.fill_polygon([(-1, -1), (1, -1), (-1, 1)])          # x + y < 64, centres on the diagonal included
    assert tri.sum() == 64 * 65 / 2 and tri[0].all() and tri[63, 0] == 1 and tri[63, 1] == 0
    img = np.random.default_rng(0).uniform(0, 255, (20, 20, 3))
    assert np.array_equal(R.resize(img, 20, "bilinear"), img) and np.array_equal(R.resize(img, 20, "bicubic"), img)
    assert np.allclose(R.resize(np.full((50, 50), 7.0), 64), 7.0)
    u8 = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(R.png_bytes(u8))) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), u8)
    assert R.png_bytes(u8) == R.png_bytes(u8.copy()) and R.finish(R.solid((1.4, 2.5, 3.6))).tolist()[0][0] == [1, 2, 4]


def test_suite_files_are_byte_identical_for_a_seed(tmp_path):
    kw = {"n_train": 3, "n_val": 2, "n_test": 2}
    S.write_suite(tmp_path / "a", seed=0, **kw)
    S.write_suite(tmp_path / "b", seed=0, **kw)
    S.write_suite(tmp_path / "c", seed=1, names=("mini_shapes",), **kw)
    ha, hb = _tree_hashes(tmp_path / "a"), _tree_hashes(tmp_path / "b")
    assert ha == hb and len(ha) == sum(len(s.classes) * 7 + 1 for s in S.SPECS)
    image = "mini_shapes/images/circle/circle_0000.png"
    assert _tree_hashes(tmp_path / "c")[image] != ha[image]


def test_suite_layout_and_split_json_format(tmp_path):
    names = S.write_suite(tmp_path, seed=0, n_train=4, n_val=2, n_test=3)
    assert len(names) >= 6
    counts = [len(S.spec(n).classes) for n in names]
    assert any(c % 2 for c in counts) and len(set(counts)) > 2
    for name in names:
        spec = S.spec(name)
        folder = tmp_path / name
        raw = (folder / spec.split_file).read_text()
        split = json.loads(raw)
        assert raw == json.dumps(split, indent=4) + "\n"
        assert set(split) == {"train", "val", "test"}
        classes = sorted(spec.classes)
        for part, per_class in (("train", 4), ("val", 2), ("test", 3)):
            rows = split[part]
            assert len(rows) == per_class * len(classes)
            for rel, label, cname in rows:
                assert isinstance(label, int) and classes[label] == cname and rel.startswith(cname + "/")
                assert (folder / "images" / rel).is_file()
        from PIL import Image

        with Image.open(folder / "images" / split["test"][0][0]) as im:
            assert im.mode == "RGB" and im.size == (32, 32)


def test_cards_and_suite_entry_match_the_generator():
    from bench import cards

    for spec in S.SPECS:
        assert (REPO / "datasets" / f"{spec.name}.yaml").read_text() == S.card_text(spec)
        card = cards.dataset_card(spec.name)
        assert (card.kind, card.folder, card.image_dir, card.split_file) == ("split_json", spec.name, "images",
                                                                            spec.split_file)
    mini = cards.suite("mini")
    assert list(mini["datasets"]) == list(S.NAMES)
    lo, hi = mini["input"]["rrc_scale"]
    assert 0.08 < lo < hi == 1.0


def test_bench_reader_sees_the_suite(tmp_path):
    from bench import cards
    from bench.data.splits import read_splits

    S.write_suite(tmp_path, seed=0, n_train=3, n_val=2, n_test=2, names=("mini_combos",))
    splits = read_splits(cards.dataset_card("mini_combos"), tmp_path)
    assert len(splits.classnames) == 12 and "red circle" in splits.classnames
    assert math.ceil(len(splits.classnames) / 2) == 6


def test_tiny_world_build_reuse_and_rebuild(tmp_path, tiny_cache):
    assert any("pretraining step" in m for m in BUILD_MESSAGES) and any("wrote mini_digits" in m for m in BUILD_MESSAGES)
    assert not list(tiny_cache.glob(".*tmp*"))                       # nothing half-built left behind
    cache = _copy_cache(tiny_cache, tmp_path / "cache")
    msgs: list[str] = []
    w = ensure_world(cache, seed=0, progress=msgs.append, config=TINY)
    assert w.root == world_dir(cache, 0, TINY) and w.backbone == "bench-mini" and w.seed == 0 and msgs == []
    assert w.datasets == TINY.datasets and w.checkpoint.is_file() and (w.root / "world.json").is_file()
    manifest = json.loads((w.root / "world.json").read_text())
    assert manifest["seed"] == 0 and "mini-clip.pt" in manifest["files"] and manifest["images_sha256"]
    assert set(manifest["content"]) == {"inputs/digits", "inputs/photos", "corpus", "weights",
                                        "data/mini_textures", "data/mini_digits"}
    assert manifest["numerics"]["threads"] == 2 and manifest["numerics"]["mkldnn"] is False

    stamp = w.checkpoint.stat().st_mtime_ns
    assert ensure_world(cache, seed=0, progress=msgs.append, config=TINY) == w and msgs == []
    assert w.checkpoint.stat().st_mtime_ns == stamp and find_world(cache, 0, TINY) == w

    split = w.data_root / "mini_digits" / "split_zhou_MiniDigits.json"
    split.write_text(split.read_text().replace('"train"', '"trian"'))     # corrupt the cache
    assert find_world(cache, 0, TINY) is None
    w2 = ensure_world(cache, seed=0, progress=msgs.append, config=TINY)
    assert any("corrupt" in m for m in msgs) and json.loads(split.read_text())["train"]
    assert w2 == w

    (w.root / "world.json").unlink()                                      # a partial build
    msgs.clear()
    ensure_world(cache, seed=0, progress=msgs.append, config=TINY)
    assert any("partial" in m for m in msgs)


def test_tiny_world_is_bit_identical_and_the_reference(tmp_path, tiny_cache, monkeypatch):
    """A second build under a hostile environment (1 thread, AVX-512 kernels, MKL's default branch) is the same
    world, file for file, and both equal the reference hashes that ship with bench (bench/mini/reference.json)."""
    import torch

    from bench.mini.reference import check

    for var, value in HOSTILE_ENV.items():
        monkeypatch.setenv(var, value)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        b = ensure_world(tmp_path / "b", seed=0, config=TINY)
    finally:
        torch.set_num_threads(threads)
    a = find_world(tiny_cache, 0, TINY)
    assert a is not None
    assert _tree_hashes(a.root) == _tree_hashes(b.root)
    c = check(a.root, 0, TINY)
    assert c.ok, c.rows
    assert [k for k, _, _ in c.rows][:4] == ["inputs/digits", "inputs/photos", "corpus", "weights"]


def test_failed_pretraining_is_one_line_and_leaves_no_world(tmp_path):
    """The pretraining subprocess failing is a one-line BenchError with its last stderr line; nothing looks built."""
    from dataclasses import replace

    from bench.errors import BenchError

    bad = replace(TINY, corpus_size=-1)
    with pytest.raises(BenchError, match=r"^mini-world pretraining failed \(exit 1\): ValueError") as err:
        ensure_world(tmp_path, seed=0, config=bad, progress=lambda _m: None)
    assert "\n" not in str(err.value) and find_world(tmp_path, 0, bad) is None
    assert not list(tmp_path.glob(".*tmp*"))                        # the half-built folder is gone


def test_tiny_world_loads_through_open_clip(tiny_cache):
    import open_clip
    import torch

    from bench.mini.pretrain import register, weights_sha256

    a = find_world(tiny_cache, 0, TINY)
    register()
    model, _, preprocess = open_clip.create_model_and_transforms("bench-mini", pretrained=str(a.checkpoint))
    manifest = json.loads((a.root / "world.json").read_text())
    assert weights_sha256(model) == manifest["content"]["weights"]
    tok = open_clip.get_tokenizer("bench-mini")
    assert tok(["a photo of a circle."]).shape == (1, 24)
    with torch.no_grad():
        assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 64)


def test_world_check_cli_match_and_mismatch(tmp_path, tiny_cache, monkeypatch, capsys):
    from bench.cli import main
    from bench.mini import reference

    monkeypatch.setenv("BENCH_CACHE", str(_copy_cache(tiny_cache, tmp_path / "cache")))
    assert main(["world", "--check", "--tiny"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert len(lines) == 6 and all(ln.endswith("  match") for ln in lines), out
    assert "the world is the reference one" in out

    refs = json.loads(json.dumps(reference.load_reference()))
    name = world_dir(None, 0, TINY).name
    refs[name]["content"]["weights"] = "0" * 64
    monkeypatch.setattr(reference, "load_reference", lambda path=None: refs)
    assert main(["world", "--check", "--tiny"]) == 1
    out = capsys.readouterr().out
    weights = next(ln for ln in out.splitlines() if ln.strip().startswith("weights"))
    assert "DIFFERS (reference 0000000000000000)" in weights
    assert sum("DIFFERS" in ln for ln in out.splitlines()) == 1 and "1 of 6 components differ" in out

    refs.pop(name)
    assert main(["world", "--check", "--tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench has no reference hashes for") and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory) -> Path:
    """The real world (about 3 minutes), built from a parent process with other thread/ISA settings."""
    cache = tmp_path_factory.mktemp("full-cache")
    with pytest.MonkeyPatch.context() as mp:
        for var, value in HOSTILE_ENV.items():
            mp.setenv(var, value)
        ensure_world(cache, seed=0)
    return cache


@pytest.mark.slow
def test_full_world_is_the_reference(full_cache, capsys, monkeypatch):
    """Acceptance: the full world is bit-identical to the reference hashes the README states."""
    from bench.cli import main

    monkeypatch.setenv("BENCH_CACHE", str(full_cache))
    assert main(["world", "--check"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert sum(ln.endswith("  match") for ln in out.splitlines()) == 4 + len(S.NAMES)


@pytest.mark.slow
def test_full_world_targets(tmp_path, full_cache):
    """The real build meets the issue's targets: zero-shot between 2x chance and 90% on every dataset, and 16-shot
    ClipFit beats zero-shot on base classes by >= 5 points (suite mean over seeds 1, 2)."""
    from bench.mini.probe import zero_shot_table
    from bench.report.collect import load_results

    world = ensure_world(full_cache, seed=0)
    for name, (acc, chance) in zero_shot_table(world).items():
        assert 2 * chance <= acc <= 90, (name, acc, chance)
    results = tmp_path / "results"
    env = {**os.environ, "BENCH_CACHE": str(full_cache), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "bench", "run", "--protocol", "base2new", "--methods", "zeroshot,clipfit",
                    "--seeds", "1,2", "--results", str(results), "--no-leaderboard"], env=env, check=True,
                   capture_output=True)
    f = load_results(results).frame
    base = f[(f.status == "completed") & (f.protocol == "base2new") & (f["eval"] == "base")]
    by_method = base.groupby(["method", "dataset"])["acc"].mean().unstack()
    assert by_method.shape == (2, len(world.datasets))
    gain = (by_method.loc["clipfit"] - by_method.loc["zeroshot"]).mean()
    assert gain >= 5, by_method
