"""The fast data path: torchvision's crop draws and tensor pixels, the same crops as the slow path, a decoded
test cache that holds the slow path's exact pixels, built once under a lock, and identical evaluations."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from bench import cards
from bench.data import decoded, images
from bench.data.decoded import DeviceTrainSet, decoded_split, rrc_params
from bench.data.splits import read_splits
from bench.evaluator import EvalOptions, evaluate


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DECODE_CACHE", str(tmp_path / "decoded"))
    return tmp_path / "decoded"


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.8, 1.0)])
def test_crop_draws_equal_torchvision(scale):
    img = torch.zeros(3, 375, 500)
    for seed in range(20):
        torch.manual_seed(seed)
        ref = T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
        torch.manual_seed(seed)
        assert rrc_params(375, 500, scale) == ref
        assert rrc_params(375, 500, scale, generator=torch.Generator().manual_seed(seed)) == ref


def test_device_batch_is_torchvisions_tensor_path(toy):
    items = read_splits(cards.dataset_card("toy"), toy).train[:6]
    mean, std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    data = DeviceTrainSet(items, 24, mean, std, (0.3, 1.0), torch.device("cpu"))
    reference = T.Compose([T.RandomResizedCrop(24, scale=(0.3, 1.0), interpolation=T.InterpolationMode.BICUBIC,
                                               antialias=True), T.RandomHorizontalFlip()])
    torch.manual_seed(11)
    x, y = data.batch([4, 1, 5])
    torch.manual_seed(11)
    for row, i in zip(x, [4, 1, 5]):
        ref = reference(data.images[i])
        expected = T.Normalize(mean, std)(ref.float().div(255))
        assert torch.equal(row, expected)
    assert y.tolist() == [items[i].label for i in (4, 1, 5)]


def test_tensor_pixels_are_within_interpolation_tolerance_of_pil(toy):
    items = read_splits(cards.dataset_card("toy"), toy).train[:4]
    data = DeviceTrainSet(items, 32, (0, 0, 0), (1, 1, 1), (1.0, 1.0), torch.device("cpu"))
    pil = images.ImageSet(items, T.Compose([T.RandomResizedCrop(32, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                                         interpolation=T.InterpolationMode.BICUBIC), T.ToTensor()]))
    torch.manual_seed(0)
    x, _ = data.batch([0])
    assert (x[0] - pil[0][0]).abs().max() <= 2 / 255 or torch.allclose(x[0], pil[0][0].flip(-1), atol=2 / 255)


def test_fast_and_slow_training_draw_the_same_crops(toy, tiny_backbone, monkeypatch):
    from bench.config import TrainConfig, resolve
    from bench.methods import build_method
    from bench.trainer import train

    boxes = {"slow": [], "fast": []}
    original_get, original_rrc = T.RandomResizedCrop.get_params, decoded.rrc_params

    def slow(img, scale, ratio):
        out = original_get(img, scale, ratio)
        boxes["slow"].append(out)
        return out

    def fast(*a, **kw):
        out = original_rrc(*a, **kw)
        boxes["fast"].append(out)
        return out

    monkeypatch.setattr(T.RandomResizedCrop, "get_params", staticmethod(slow))
    monkeypatch.setattr(decoded, "rrc_params", fast)
    items = read_splits(cards.dataset_card("toy"), toy).train[:12]
    for path in ("slow", "fast"):
        params, _ = resolve("coop", "toy", "fewshot", 2)
        m = build_method("coop", tiny_backbone, ["a", "b", "c", "d", "e"], "a photo of a {}.", params)
        train(m, items, TrainConfig(epochs=3, batch_size=5, fast=path == "fast"), 2, 1, torch.device("cpu"))
    assert len(boxes["slow"]) == 30 and boxes["fast"] == boxes["slow"]


def test_decoded_split_holds_the_slow_paths_pixels(toy, cache):
    items = read_splits(cards.dataset_card("toy"), toy).test
    pixels = decoded_split(items, 24)
    assert isinstance(pixels, np.memmap) and pixels.shape == (len(items), 3, 24, 24)
    slow = images.ImageSet(items, images.test_transform(24, (0, 0, 0), (1, 1, 1)))
    for i in (0, 7, len(items) - 1):
        assert torch.equal(torch.from_numpy(pixels[i].astype(np.float32)).div(255), slow[i][0])


def test_decoded_split_is_built_once_by_concurrent_users_and_reused(toy, cache, monkeypatch):
    items = read_splits(cards.dataset_card("toy"), toy).test
    calls = []
    original = decoded.load_image
    monkeypatch.setattr(decoded, "load_image", lambda p: calls.append(p) or original(p))
    threads = [threading.Thread(target=decoded_split, args=(items, 24)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == len(items)                          # one builder, the others waited and read it
    decoded_split(items, 24)
    assert len(calls) == len(items) and len(list(cache.glob("*.npy"))) == 1
    assert not list(cache.glob(".*tmp*"))                   # built under a temporary name, then renamed


def test_train_images_are_decoded_once_per_process_and_again_when_replaced(toy, tmp_path, monkeypatch):
    import os
    import shutil

    items = read_splits(cards.dataset_card("toy"), toy).train[:6]
    copies = []
    for i, it in enumerate(items):                          # private copies: this test rewrites one
        path = tmp_path / f"{i}{os.path.splitext(it.path)[1]}"
        shutil.copy(it.path, path)
        copies.append(type(it)(str(path), it.label, it.classname))
    calls = []
    original = decoded.load_image
    monkeypatch.setattr(decoded, "load_image", lambda p: calls.append(p) or original(p))
    memo = decoded.DecodedImages(budget_bytes=1 << 30)
    monkeypatch.setattr(decoded, "DECODED", memo)
    cpu = torch.device("cpu")
    first = DeviceTrainSet(copies, 24, (0, 0, 0), (1, 1, 1), (0.5, 1.0), cpu)
    second = DeviceTrainSet(copies[::-1], 24, (0, 0, 0), (1, 1, 1), (0.5, 1.0), cpu)   # another cell, same images
    assert len(calls) == len(copies)
    assert all(torch.equal(a, b) for a, b in zip(first.images, second.images[::-1]))
    with open(copies[0].path, "ab") as fh:                  # the file changes (size and mtime): decoded again
        fh.write(b"\0")
    DeviceTrainSet(copies, 24, (0, 0, 0), (1, 1, 1), (0.5, 1.0), cpu)
    assert calls[len(copies):] == [copies[0].path]

    small = decoded.DecodedImages(budget_bytes=first.images[0].numel())   # room for one image: the rest leave
    small.get(copies)
    assert small.nbytes <= first.images[0].numel() and len(small._images) <= 1
    off = decoded.DecodedImages(budget_bytes=0)
    off.get(copies)
    assert off.nbytes == 0 and not off._images


def test_fast_and_slow_evaluation_agree(toy, tiny_backbone, cache):
    from bench.config import resolve
    from bench.methods import build_method

    items = read_splits(cards.dataset_card("toy"), toy).test
    params, _ = resolve("clipfit", "toy", "fewshot", 2)
    m = build_method("clipfit", tiny_backbone, ["red square", "green square", "blue square", "yellow square",
                                                "purple square"], "a photo of a {}.", params)
    fast = evaluate(m, items, torch.device("cpu"), EvalOptions(fast=True, fast_batch_size=7))
    slow = evaluate(m, items, torch.device("cpu"), EvalOptions(fast=False, batch_size=100))
    assert fast.metrics == slow.metrics
    assert np.array_equal(fast.predictions["top5"], slow.predictions["top5"])
    assert np.allclose(fast.predictions["p_true"].astype(float), slow.predictions["p_true"].astype(float), atol=2e-3)


def test_available_cpus_follows_slurm(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert decoded.available_cpus() == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert decoded.available_cpus() >= 1


def test_train_decode_budget_and_missing_images_fail_in_one_line(toy, monkeypatch):
    from bench.errors import BenchError

    monkeypatch.setenv("BENCH_TRAIN_DECODE_MB", "lots")
    with pytest.raises(BenchError, match="BENCH_TRAIN_DECODE_MB='lots' is not a number"):
        decoded.DecodedImages().get([])
    item = read_splits(cards.dataset_card("toy"), toy).train[0]
    gone = item._replace(path=item.path + ".missing.png")
    with pytest.raises(BenchError, match="missing.png"):
        decoded.DecodedImages(budget_bytes=1 << 20).get([gone])
