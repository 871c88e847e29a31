"""Fixes found by running the real path as a user would: hidden files beside images, stale feature caches,
drop_last per method card, the base-to-new validation count, divergence."""

from __future__ import annotations

import json
import os

from toydata import make_image, make_imagenet_like

from bench import cards
from bench.cli import main
from bench.config import TrainConfig, resolve
from bench.data.splits import read_splits
from bench.evaluator import FeatureCache
from bench.results import ResultStore
from bench.trainer import budget

FAST = ["--set", "epochs=1", "--set", "batch_size=8", "--no-leaderboard", "--seeds", "1"]


def test_hidden_resource_forks_beside_images_are_skipped(toy, tmp_path):
    make_imagenet_like(toy)
    for folder in (toy / "imagenet" / "images" / "train").iterdir():
        for img in list(folder.iterdir()):
            (folder / f"._{img.name}").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    for folder in (toy / "imagenet" / "images" / "val").iterdir():
        (folder / "._x.JPEG").write_bytes(b"junk")
    splits = read_splits(cards.dataset_card("imagenet"), toy)
    assert not any(os.path.basename(it.path).startswith(".") for it in splits.train + splits.test)
    assert main(["validate", "--data-root", str(toy), "--datasets", "imagenet"]) == 0
    r = tmp_path / "r"
    assert main(["run", "--methods", "zeroshot,clipfit", "--datasets", "imagenet", "--data-root", str(toy),
                 "--backbone", "bench-tiny", "--pretrained", "none", "--shots", "2", "--results", str(r),
                 *FAST]) == 0


def test_image_folder_cards_skip_hidden_files_too(toy, tmp_path, monkeypatch):
    from toydata import write_card

    base = tmp_path / "own" / "mine" / "images"
    for label, name in enumerate(["cat", "dog"]):
        (base / name).mkdir(parents=True)
        for i in range(10):
            make_image(label, i).save(base / name / f"{i}.png")
            (base / name / f"._{i}.png").write_bytes(b"junk")
    card = write_card(tmp_path / "cards", "mine", "mine", split_file="split_bench_mine.json")
    card.write_text(card.read_text().replace("kind: split_json", "kind: image_folder"))
    monkeypatch.setenv("BENCH_CARDS_PATH", str(tmp_path / "cards"))
    cards.clear_caches()
    splits = read_splits(cards.dataset_card("mine"), tmp_path / "own")
    assert len(splits.train + splits.val + splits.test) == 20


def test_feature_cache_key_follows_image_bytes(toy):
    items = read_splits(cards.dataset_card("toy"), toy).test
    key = FeatureCache.key("bb", items, 32)
    assert FeatureCache.key("bb", items, 32) == key
    assert FeatureCache.key("bb", items, 32, "bfloat16") != key               # autocast precision is identity
    path = items[0].path
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000))             # same size, newer mtime
    assert FeatureCache.key("bb", items, 32) != key
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert FeatureCache.key("bb", items, 32) == key


def test_force_rerun_never_serves_features_of_replaced_images(toy, tmp_path):
    r = tmp_path / "r"
    args = ["run", "--methods", "zeroshot", "--datasets", "toy", "--data-root", str(toy), "--backbone", "bench-tiny",
            "--pretrained", "none", "--results", str(r), "--no-leaderboard"]
    assert main(args) == 0
    split = json.loads((toy / "toy" / "split_toy.json").read_text())
    for rel, label, _ in split["test"]:                    # overwrite every test image, same paths
        make_image((label + 1) % 5, 900, size=48).save(toy / "toy" / "images" / rel)
    assert main([*args, "--force"]) == 0
    assert len(list((r / "features").glob("*.safetensors"))) == 2             # re-encoded, not served stale


def test_drop_last_is_a_card_setting_and_clip_lora_keeps_the_last_batch():
    _, lora = resolve("lora", "toy", "fewshot", 4)
    _, coop = resolve("coop", "toy", "fewshot", 4)
    assert lora.drop_last is False and coop.drop_last == "auto"
    assert budget(coop, 4, 40)[0] == 1 and budget(lora, 4, 40)[0] == 2        # 40 images, batch 32
    assert budget(coop, 1, 10)[0] == 1                                        # a tiny set still gives one batch
    assert budget(TrainConfig(drop_last=True, batch_size=32), 4, 40)[0] == 1


def test_base2new_counts_the_base_class_validation_draw(toy, tmp_path):
    r = tmp_path / "r"
    assert main(["run", "--methods", "clipfit", "--datasets", "toy", "--protocol", "base2new", "--data-root",
                 str(toy), "--backbone", "bench-tiny", "--pretrained", "none", "--shots", "2", "--results", str(r),
                 *FAST]) == 0
    (res,) = [res for _, res in ResultStore(r).iter_results()]
    assert res["data"]["n_train"] == 3 * 2 and res["data"]["n_val"] == 3 * 2      # 3 base classes × min(K, 4)


def test_divergence_fails_the_cell_with_a_one_line_error_and_the_sweep_goes_on(toy, tmp_path):
    r = tmp_path / "r"
    code = main(["run", "--methods", "clipfit,zeroshot", "--datasets", "toy", "--data-root", str(toy), "--backbone",
                 "bench-tiny", "--pretrained", "none", "--shots", "2", "--results", str(r), "--set", "lr=1.0e+30",
                 "--set", "epochs=3", "--set", "batch_size=4", "--set", "warmup_epochs=0", "--no-leaderboard",
                 "--seeds", "1"])
    assert code == 1
    by_method = {res["config"]["method"]: res for _, res in ResultStore(r).iter_results()}
    assert by_method["zeroshot"]["status"] == "completed"
    failed = by_method["clipfit"]
    assert failed["status"] == "failed" and failed["error"]["type"] == "DivergedError"
    message = failed["error"]["message"]
    assert message.startswith("training diverged: ") and f"precision {failed['runtime']['precision']}" in message
    assert "epoch" in message and "iteration" in message and "last finite loss" in message
