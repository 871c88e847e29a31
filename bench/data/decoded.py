"""Decode once (the fast data path): few-shot train sets as uint8 tensors on the training device, augmented per
batch there; test splits decoded once into a shared, memory-mapped uint8 cache on local disk.

Usage:
    >>> train = DeviceTrainSet(items, size=224, mean=mean, std=std, scale=(0.08, 1.0), device=device)
    >>> x, y = train.batch([3, 0, 7])                    # (3, 3, 224, 224) normalised floats on `device`
    >>> pixels = decoded_split(items, size=224)         # (N, 3, 224, 224) uint8, np.memmap, built once per node

Train: each image is decoded once per process (PIL, RGB) at full resolution and kept for the next cells of the
sweep (`DecodedImages`, a byte-bounded LRU). Per batch, RandomResizedCrop parameters and the
flip are drawn exactly as torchvision draws them (same sampler, same global RNG, same order as the slow path's
per-item transforms), and torchvision's tensor resize (bicubic, antialias) runs on the device: the pixels are
torchvision's tensor path bit for bit, within interpolation tolerance of the PIL path.
Test: resize (bicubic) + center crop in PIL, exactly as the slow path, stored as uint8 under a key of the image
list (each file's path, size and mtime), size and transform; built by one process under a file lock with the
decoding spread over the CPUs the job may use, written to a temporary name and renamed.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.data.images import load_image, test_transform_pil
from bench.data.splits import Item
from bench.errors import BenchError

logger = logging.getLogger(__name__)

RATIO = (3.0 / 4.0, 4.0 / 3.0)
# torchvision draws the aspect ratio between log(ratio) computed in float32: the same bounds, computed once
LOG_RATIO = tuple(float(v) for v in torch.log(torch.tensor(RATIO)))
CACHE_VERSION = 1


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by SLURM_CPUS_PER_TASK when set."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(n, int(slurm)) if slurm.isdigit() else n)


def parallel_map(fn, items: list, workers: int | None = None) -> list:
    """`fn` over `items` on a thread pool (PIL decodes and resizes with the GIL released)."""
    workers = workers or available_cpus()
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (4 * workers))))


def rrc_params(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float] = RATIO,
               generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop: torchvision's sampler, draw for draw (global RNG by default)."""
    area = height * width
    log_ratio = LOG_RATIO if tuple(ratio) == RATIO else tuple(float(v) for v in torch.log(torch.tensor(ratio)))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) (or floats holding uint8 values) → float, as ToTensor + Normalize compute it (same
    operations, same order)."""
    return x.float().div(255).sub(mean).div(std)


def _decode(item: Item) -> torch.Tensor:
    return torch.from_numpy(np.array(load_image(item.path))).permute(2, 0, 1).contiguous()    # (3, H, W) uint8


class DecodedImages:
    """Full-resolution train images decoded once per process: the cells of a sweep (methods × seeds × shots on one
    dataset) share their few-shot images, so each is decoded once, not once per cell. Keyed on path, size and
    mtime (a replaced file is decoded again); least recently used images leave past the byte budget
    (BENCH_TRAIN_DECODE_MB, default 2048; 0 turns it off). Tensors are shared read-only (crops copy)."""

    def __init__(self, budget_bytes: int | None = None):
        self._budget = budget_bytes
        self._images: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        if self._budget is None:                 # read at first use, so a bad value is an error of the run
            raw = os.environ.get("BENCH_TRAIN_DECODE_MB", "2048")
            try:
                self._budget = int(float(raw) * 2**20)
            except ValueError:
                raise BenchError(f"BENCH_TRAIN_DECODE_MB={raw!r} is not a number of MB (0 turns the cache off)") \
                    from None
        return self._budget

    @staticmethod
    def _key(item: Item) -> tuple:
        try:
            st = os.stat(item.path)
        except OSError:                          # decoding it raises the reader's one-line error
            return item.path, None, None
        return item.path, st.st_size, st.st_mtime_ns

    def get(self, items: list[Item], workers: int | None = None) -> list[torch.Tensor]:
        if self.budget <= 0:
            return parallel_map(_decode, items, workers)
        keys = [self._key(it) for it in items]
        with self._lock:
            found = {k: self._images[k] for k in keys if k in self._images}
            for k in found:
                self._images.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        by_key = {k: it for k, it in zip(keys, items)}
        decoded = dict(zip(missing, parallel_map(_decode, [by_key[k] for k in missing], workers)))
        with self._lock:
            for k, img in decoded.items():
                self._images[k] = img
                self.nbytes += img.numel()
            while self.nbytes > self.budget and self._images:
                _, old = self._images.popitem(last=False)
                self.nbytes -= old.numel()
        return [found.get(k, decoded.get(k)) for k in keys]


DECODED = DecodedImages()


class DeviceTrainSet:
    """A few-shot train set decoded once; batches are cropped, resized, flipped and normalised on the device."""

    def __init__(self, items: list[Item], size: int, mean, std, scale, device: torch.device,
                 budget_bytes: int | None = None, workers: int | None = None):
        self.size, self.scale, self.device = size, tuple(scale), device
        images = DECODED.get(list(items), workers)
        total = sum(img.numel() for img in images)
        budget = budget_bytes if budget_bytes is not None else _device_budget(device)
        where = device if total <= budget else torch.device("cpu")
        if where != device:
            logger.warning("train images take %.1f GB, over the %.1f GB device budget: kept in pinned host memory",
                           total / 2**30, budget / 2**30)
        pin = where.type == "cpu" and device.type == "cuda"
        self.images = [img.pin_memory() if pin else img.to(where) for img in images]
        self.labels = torch.tensor([it.label for it in items], dtype=torch.long)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
        self.nbytes = total

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented, normalised images (B, 3, S, S) and labels (B,), both on the device.

        Per image only what differs in shape runs alone (crop, the antialiased bicubic resize, the flip); the
        rounding to uint8 values that torchvision's resize of a uint8 image ends with (clamp, round), the
        normalisation and the labels run once for the batch: the same values, a fifth of the operations."""
        out = []
        for i in indices:
            img = self.images[i]
            top, left, h, w = rrc_params(img.shape[1], img.shape[2], self.scale)
            flip = torch.rand(1).item() < 0.5                                     # RandomHorizontalFlip's draw
            crop = img[None, :, top:top + h, left:left + w].to(self.device, non_blocking=True).float()
            crop = torch.nn.functional.interpolate(crop, size=(self.size, self.size), mode="bicubic",
                                                   align_corners=False, antialias=True)
            out.append(crop.flip(-1) if flip else crop)
        x = torch.cat(out).clamp_(0, 255).round_()                         # torchvision: clamp, round, to uint8
        return normalise(x, self.mean, self.std), self.labels[indices].to(self.device, non_blocking=True)


def _device_budget(device: torch.device) -> int:
    """Bytes of decoded train images kept on a CUDA device: a quarter of its free memory (unbounded elsewhere)."""
    if device.type != "cuda":
        return 1 << 62
    free, _ = torch.cuda.mem_get_info(device)
    return free // 4


# ---- the shared test-split cache ----

def decode_cache_dir() -> Path:
    """BENCH_DECODE_CACHE, else <BENCH_CACHE or ~/.cache/bench>/decoded: local disk, shared by every cell on a node."""
    explicit = os.environ.get("BENCH_DECODE_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench") / "decoded"


def items_key(prefix: str, items: list[Item]) -> str:
    """A cache key over `prefix` and every image's path, size and mtime: a file whose bytes change (size or
    mtime) gets a new key, so no cache ever serves pixels or features of replaced images."""
    h = hashlib.sha256(prefix.encode())
    for it in items:
        try:
            st = os.stat(it.path)
            h.update(f"{it.path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        except OSError:
            h.update(f"{it.path}\0missing\0".encode())
    return h.hexdigest()[:24]


def split_key(items: list[Item], size: int) -> str:
    return items_key(f"v{CACHE_VERSION}|resize-bicubic+center-crop|{size}", items)


def decoded_split(items: list[Item], size: int, cache_dir: Path | None = None,
                  workers: int | None = None) -> np.ndarray:
    """(N, 3, size, size) uint8 test pixels (the slow path's PIL resize + center crop), memory-mapped."""
    folder = Path(cache_dir or decode_cache_dir())
    folder.mkdir(parents=True, exist_ok=True)
    key = split_key(items, size)
    path = folder / f"{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                # one builder per node; the others wait, then read
        if path.is_file():
            return np.load(path, mmap_mode="r")
        tmp = folder / f".{key}.{os.getpid()}.tmp.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(items), 3, size, size))
        _fill(out, items, size, workers)
        out.flush()
        del out                                          # unmap before the rename publishes the file
        os.replace(tmp, path)
        logger.info("decoded %d test images at %d px into %s", len(items), size, path)
    return np.load(path, mmap_mode="r")


def _fill(out: np.ndarray, items: list[Item], size: int, workers: int | None) -> None:
    transform = test_transform_pil(size)

    def one(i: int) -> None:
        out[i] = np.asarray(transform(load_image(items[i].path))).transpose(2, 0, 1)

    parallel_map(one, list(range(len(items))), workers)


def iter_decoded(pixels: np.ndarray, batch_size: int, device: torch.device, mean, std):
    """Normalised float batches from a decoded split, the next one read while the current one is used."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    pin = device.type == "cuda"

    def load(start: int) -> torch.Tensor:
        x = torch.from_numpy(np.array(pixels[start:start + batch_size]))         # a writable copy off the memmap
        return x.pin_memory() if pin else x

    starts = list(range(0, len(pixels), batch_size))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(load, starts[0]) if starts else None
        for k in range(len(starts)):
            x = pending.result()
            pending = pool.submit(load, starts[k + 1]) if k + 1 < len(starts) else None
            yield normalise(x.to(device, non_blocking=True), mean, std)
