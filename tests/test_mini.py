"""The mini world: deterministic corpus and suite files, CoOp layout, cards, cache reuse and corrupt-cache rebuild.

Fast tests use a tiny build (a few hundred corpus images, a handful of pretraining steps, 2-4 images per split);
the full build (about 3 minutes) and the acceptance check on it are marked slow.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.mini import suite as S
from bench.mini.corpus import HELD_OUT, make_corpus
from bench.mini.world import BuildConfig, ensure_world, find_world, world_dir

TINY = BuildConfig(corpus_size=64, steps=2, batch_size=16, n_train=3, n_val=2, n_test=2,
                   datasets=("mini_textures", "mini_digits"))
REPO = Path(__file__).resolve().parent.parent


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


def test_tiny_world_build_reuse_and_rebuild(tmp_path):
    msgs: list[str] = []
    w = ensure_world(tmp_path, seed=0, progress=msgs.append, config=TINY)
    assert w.root == world_dir(tmp_path, 0, TINY) and w.backbone == "bench-mini" and w.seed == 0
    assert w.datasets == TINY.datasets and w.checkpoint.is_file() and (w.root / "world.json").is_file()
    assert any("pretraining step" in m for m in msgs) and any("wrote mini_digits" in m for m in msgs)
    assert not list(tmp_path.glob(".*tmp*"))                       # nothing half-built left behind
    manifest = json.loads((w.root / "world.json").read_text())
    assert manifest["seed"] == 0 and "mini-clip.pt" in manifest["files"] and manifest["images_sha256"]

    msgs.clear()
    stamp = w.checkpoint.stat().st_mtime_ns
    assert ensure_world(tmp_path, seed=0, progress=msgs.append, config=TINY) == w and msgs == []
    assert w.checkpoint.stat().st_mtime_ns == stamp and find_world(tmp_path, 0, TINY) == w

    split = w.data_root / "mini_digits" / "split_zhou_MiniDigits.json"
    split.write_text(split.read_text().replace('"train"', '"trian"'))     # corrupt the cache
    assert find_world(tmp_path, 0, TINY) is None
    w2 = ensure_world(tmp_path, seed=0, progress=msgs.append, config=TINY)
    assert any("corrupt" in m for m in msgs) and json.loads(split.read_text())["train"]
    assert w2 == w

    (w.root / "world.json").unlink()                                      # a partial build
    msgs.clear()
    ensure_world(tmp_path, seed=0, progress=msgs.append, config=TINY)
    assert any("partial" in m for m in msgs)


def test_tiny_world_is_deterministic_and_loads_through_open_clip(tmp_path):
    import open_clip
    import torch

    from bench.mini.pretrain import register

    a = ensure_world(tmp_path / "a", seed=0, config=TINY)
    b = ensure_world(tmp_path / "b", seed=0, config=TINY)
    assert _tree_hashes(a.data_root) == _tree_hashes(b.data_root)
    assert (a.root / "world.json").read_bytes() == (b.root / "world.json").read_bytes()
    sa, sb = torch.load(a.checkpoint), torch.load(b.checkpoint)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    register()
    model, _, preprocess = open_clip.create_model_and_transforms("bench-mini", pretrained=str(a.checkpoint))
    tok = open_clip.get_tokenizer("bench-mini")
    assert tok(["a photo of a circle."]).shape == (1, 24)
    with torch.no_grad():
        assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 64)


@pytest.mark.slow
def test_full_world_targets(tmp_path):
    """The real build (about 3 minutes) meets the issue's targets: zero-shot between 2x chance and 90% on every
    dataset, and 16-shot ClipFit beats zero-shot on base classes by >= 5 points (suite mean over seeds 1, 2)."""
    from bench.mini.probe import zero_shot_table
    from bench.report.collect import load_results

    world = ensure_world(tmp_path / "cache", seed=0)
    for name, (acc, chance) in zero_shot_table(world).items():
        assert 2 * chance <= acc <= 90, (name, acc, chance)
    results = tmp_path / "results"
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "bench", "run", "--protocol", "base2new", "--methods", "zeroshot,clipfit",
                    "--seeds", "1,2", "--results", str(results), "--no-leaderboard"], env=env, check=True,
                   capture_output=True)
    f = load_results(results).frame
    base = f[(f.status == "completed") & (f.protocol == "base2new") & (f["eval"] == "base")]
    by_method = base.groupby(["method", "dataset"])["acc"].mean().unstack()
    assert by_method.shape == (2, len(world.datasets))
    gain = (by_method.loc["clipfit"] - by_method.loc["zeroshot"]).mean()
    assert gain >= 5, by_method
