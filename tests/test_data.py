"""Data: every card kind parses; few-shot draws equal Dassl's; base/new counts; transforms; bad input."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import pytest
from toydata import TOY_CLASSES, make_image, write_card

from bench import cards
from bench.data.fewshot import base_new_split, manifest, manifest_sha256, sample_fewshot
from bench.data.splits import Item, Splits, read_splits
from bench.errors import BenchError


def dassl_reference(train: list, val: list, k: int, seed: int):
    """Dassl's generate_fewshot_dataset, literally: global random, defaultdict by label, train then val."""
    random.seed(seed)

    def gen(source, n):
        groups = defaultdict(list)
        for it in source:
            groups[it.label].append(it)
        out = []
        for items in groups.values():
            out.extend(random.sample(items, n) if len(items) >= n else items)
        return out

    return gen(train, k), gen(val, min(k, 4))


def synthetic_splits(n_classes=7, per_class=20, seed=0) -> Splits:
    rng = random.Random(seed)
    train = [Item(f"/d/{c}/{i}.png", c, f"class{c}") for c in range(n_classes) for i in range(per_class)]
    rng.shuffle(train)             # labels interleaved, as in real split files
    val = [Item(f"/d/v{c}/{i}.png", c, f"class{c}") for c in range(n_classes) for i in range(6)]
    return Splits(train, val, [], [f"class{c}" for c in range(n_classes)])


@pytest.mark.parametrize("k,seed", [(1, 1), (4, 2), (16, 3), (25, 1)])
def test_fewshot_equals_dassl_and_leaves_global_random_alone(k, seed):
    splits = synthetic_splits()
    random.seed(12345)
    before = random.random()
    random.seed(12345)
    train, val = sample_fewshot(splits, k, seed)
    assert random.random() == before                    # private stream: global state untouched
    ref_train, ref_val = dassl_reference(splits.train, splits.val, k, seed)
    assert train == ref_train and val == ref_val
    assert len(val) == 7 * min(k, 4, 6)
    assert len(train) == 7 * min(k, 20)                  # all items when a class has fewer than K


def test_fewshot_is_deterministic_and_seed_dependent():
    splits = synthetic_splits()
    assert sample_fewshot(splits, 4, 1) == sample_fewshot(splits, 4, 1)
    assert sample_fewshot(splits, 4, 1) != sample_fewshot(splits, 4, 2)
    with pytest.raises(BenchError, match="shots must be an integer"):
        sample_fewshot(splits, 2.5, 1)


@pytest.mark.parametrize("dataset,n,base,new", [
    ("imagenet", 1000, 500, 500), ("caltech101", 100, 50, 50), ("oxford_pets", 37, 19, 18),
    ("stanford_cars", 196, 98, 98), ("oxford_flowers", 102, 51, 51), ("food101", 101, 51, 50),
    ("fgvc_aircraft", 100, 50, 50), ("sun397", 397, 199, 198), ("dtd", 47, 24, 23), ("eurosat", 10, 5, 5),
    ("ucf101", 101, 51, 50)])
def test_base_new_counts(dataset, n, base, new):
    train = [Item(f"/x/{c}.png", c, f"c{c}") for c in reversed(range(n))]
    b = base_new_split(train, [], train, "base")
    w = base_new_split(train, [], train, "new")
    assert (len(b.classnames), len(w.classnames)) == (base, new)
    assert sorted({it.label for it in b.train}) == list(range(base))          # relabelled 0..k-1
    assert b.labels == list(range(base)) and w.labels == list(range(base, n))
    assert w.classnames[0] == f"c{base}"


def test_split_json_reader_and_manifest(toy):
    splits = read_splits(cards.dataset_card("toy"), toy)
    assert splits.classnames == [c.replace("_", " ") for c in TOY_CLASSES]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    assert Path(splits.train[0].path).is_file()
    train, val = sample_fewshot(splits, 2, 1)
    m = manifest("toy", 1, 2, 1, train, val, toy)
    assert set(m["train"]) == set(splits.classnames) and all(len(v) == 2 for v in m["train"].values())
    assert not m["train"]["red square"][0].startswith("/")          # portable: relative to the data root
    assert manifest_sha256(m) == manifest_sha256(json.loads(json.dumps(m)))


def test_imagenet_listing_is_sorted(tmp_path):
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for wnid in ("n02", "n01"):
            (root / "images" / split / wnid).mkdir(parents=True)
            for name in ("b.JPEG", "a.JPEG", "c.JPEG"):
                make_image(0, 0).save(root / "images" / split / wnid / name, format="PNG")
    (root / "classnames.txt").write_text("n01 tench fish\nn02 goldfish\n")
    s = read_splits(cards.dataset_card("imagenet"), tmp_path)
    assert s.classnames == ["tench fish", "goldfish"] and s.val == []
    assert [Path(it.path).name for it in s.train[:3]] == ["a.JPEG", "b.JPEG", "c.JPEG"]
    assert [it.label for it in s.test] == [0, 0, 0, 1, 1, 1]


def test_imagenet_variants_and_fgvc(tmp_path):
    a = tmp_path / "imagenet-adversarial"
    for wnid in ("n05", "n03"):
        (a / "imagenet-a" / wnid).mkdir(parents=True)
        make_image(1, 1).save(a / "imagenet-a" / wnid / "x.jpg", format="PNG")
    (a / "imagenet-a" / "README.txt").write_text("ignored")
    (a / "classnames.txt").write_text("n01 a\nn03 three\nn05 five\n")
    s = read_splits(cards.dataset_card("imagenet_a"), tmp_path)
    assert s.classnames == ["three", "five"] and [it.label for it in s.test] == [0, 1]
    v2 = tmp_path / "imagenetv2"
    for label in (0, 1):
        (v2 / "imagenetv2-matched-frequency-format-val" / str(label)).mkdir(parents=True)
        make_image(0, 0).save(v2 / "imagenetv2-matched-frequency-format-val" / str(label) / "1.jpeg", format="PNG")
    (v2 / "classnames.txt").write_text("n01 tench\nn02 goldfish\n")
    s = read_splits(cards.dataset_card("imagenet_v2"), tmp_path)
    assert s.classnames == ["tench", "goldfish"] and [it.label for it in s.test] == [0, 1]
    f = tmp_path / "fgvc_aircraft"
    (f / "images").mkdir(parents=True)
    (f / "variants.txt").write_text("707-320\nA300B4\n")
    for split in ("train", "val", "test"):
        (f / f"images_variant_{split}.txt").write_text("0001 707-320\n0002 A300B4\n")
    s = read_splits(cards.dataset_card("fgvc_aircraft"), tmp_path)
    assert s.classnames == ["707-320", "A300B4"] and s.train[1].path.endswith("images/0002.jpg")


def test_image_folder_and_csv_cards(tmp_path, monkeypatch):
    data = tmp_path / "data" / "mine"
    for c in ("cat", "dog"):
        (data / "images" / c).mkdir(parents=True)
        for i in range(10):
            make_image(0, i).save(data / "images" / c / f"{i}.png")
    write_card(tmp_path / "cards", "mine", "mine", split_file="split_mine.json")
    text = (tmp_path / "cards" / "datasets" / "mine.yaml").read_text().replace("kind: split_json", "kind: image_folder")
    (tmp_path / "cards" / "datasets" / "mine.yaml").write_text(text)
    rows = ["path,label,split"] + [f"{c}/{i}.png,{c},{'train' if i < 6 else 'test'}" for c in ("cat", "dog") for i in range(10)]
    (data / "data.csv").write_text("\n".join(rows))
    write_card(tmp_path / "cards", "mine_csv", "mine")
    text = (tmp_path / "cards" / "datasets" / "mine_csv.yaml").read_text().replace("kind: split_json", "kind: csv")
    (tmp_path / "cards" / "datasets" / "mine_csv.yaml").write_text(text)
    monkeypatch.setenv("BENCH_CARDS_PATH", str(tmp_path / "cards"))
    cards.clear_caches()
    s = read_splits(cards.dataset_card("mine"), tmp_path / "data")
    assert (data / "split_mine.json").is_file()                     # the seeded split is written on first use
    assert (len(s.train), len(s.val), len(s.test)) == (10, 4, 6) and s.classnames == ["cat", "dog"]
    assert read_splits(cards.dataset_card("mine"), tmp_path / "data") == s
    c = read_splits(cards.dataset_card("mine_csv"), tmp_path / "data")
    assert (len(c.train), len(c.test)) == (12, 8)


def test_transforms_shapes(tiny_backbone):
    from bench.data.images import test_transform, train_transform

    img = make_image(0, 0, size=50)
    assert train_transform(32, tiny_backbone.mean, tiny_backbone.std)(img).shape == (3, 32, 32)
    assert test_transform(224, tiny_backbone.mean, tiny_backbone.std)(img.resize((300, 200))).shape == (3, 224, 224)


def test_bad_inputs_are_one_line_errors(toy, tmp_path):
    card = cards.dataset_card("toy")
    with pytest.raises(BenchError, match="data root .* does not exist"):
        read_splits(card, tmp_path / "nowhere")
    with pytest.raises(BenchError, match=r"folder .*oxford_pets is missing; expected .*split_zhou_OxfordPets.json"):
        read_splits(cards.dataset_card("oxford_pets"), toy)
    split = toy / "toy" / "split_toy.json"
    raw = json.loads(split.read_text())
    raw["train"][3] = ["x.png", "zero", "red"]
    split.write_text(json.dumps(raw))
    with pytest.raises(BenchError, match=r"split_toy.json: train\[3\] must be \[path, label, classname\]"):
        read_splits(card, toy)
    split.write_text("{not json")
    with pytest.raises(BenchError, match="malformed split file .*split_toy.json"):
        read_splits(card, toy)
    split.unlink()
    with pytest.raises(BenchError, match="split file .*split_toy.json is missing"):
        read_splits(card, toy)


def test_class_without_training_images_and_unreadable_image(toy):
    split = toy / "toy" / "split_toy.json"
    raw = json.loads(split.read_text())
    raw["train"] = [e for e in raw["train"] if e[1] != 2]
    split.write_text(json.dumps(raw))
    with pytest.raises(BenchError, match="class 'blue square' .* has no training images"):
        read_splits(cards.dataset_card("toy"), toy)
    from bench.data.images import load_image

    bad = toy / "toy" / "images" / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(BenchError, match=f"cannot read image {bad}"):
        load_image(str(bad))


def test_shots_must_be_positive_integers():
    from bench.grid import Grid, expand

    with pytest.raises(BenchError, match="shots must be positive integers"):
        expand(Grid(methods=["coop"], datasets=["dtd"], shots=[0]), with_data=False)


def test_ceil_base_split_odd():
    train = [Item(f"{c}", c, f"c{c}") for c in range(5)]
    assert len(base_new_split(train, [], train, "base").classnames) == 3
