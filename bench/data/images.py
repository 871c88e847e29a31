"""Transforms (Dassl/CLIP conventions) and image sets.

Usage:
    >>> tf = train_transform(224, mean, std, scale=(0.08, 1.0))
    >>> ds = ImageSet(items, tf, preload=True)     # few-shot train: decoded once per cell
    >>> x, y = ds[0]

Train: RandomResizedCrop(size, scale, bicubic) + horizontal flip + CLIP normalisation (no plain resize).
Test: resize the short side to `size` (bicubic) + center crop + normalisation. Images open with PIL as RGB.
"""

from __future__ import annotations

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T

from bench.data.splits import Item
from bench.errors import BenchError

BICUBIC = T.InterpolationMode.BICUBIC


def train_transform(size: int, mean, std, scale=(0.08, 1.0)) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=tuple(scale), interpolation=BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def test_transform_pil(size: int) -> T.Compose:
    """The geometric part of the test transform, on PIL images (the decoded test cache stores its output)."""
    return T.Compose([T.Resize(size, interpolation=BICUBIC), T.CenterCrop(size)])


def test_transform(size: int, mean, std) -> T.Compose:
    return T.Compose([test_transform_pil(size), T.ToTensor(), T.Normalize(mean, std)])


def load_image(path: str) -> Image.Image:
    """Decode fully (a truncated file is an error: PIL's LOAD_TRUNCATED_IMAGES stays off) as RGB."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except UnidentifiedImageError as err:
        raise BenchError(f"cannot read image {path}: not an image file (PIL cannot identify its format)") from err
    except (OSError, ValueError) as err:
        raise BenchError(f"cannot read image {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
                         ) from err


class ImageSet(Dataset):
    """Items → (tensor, label). With preload the images are decoded once and kept in memory."""

    def __init__(self, items: list[Item], transform, preload: bool = False):
        self.items = list(items)
        self.transform = transform
        self.cache = [load_image(it.path) for it in self.items] if preload else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.cache[i] if self.cache is not None else load_image(self.items[i].path)
        return self.transform(img), self.items[i].label
