"""CLIP-Adapter (Gao et al., IJCV 2023, arXiv 2110.04544): a residual bottleneck adapter on the image feature.

Usage:
    $ bench run --methods clip_adapter --shots 16

As the released code: Linear(c → c/4, no bias), ReLU, Linear(c/4 → c, no bias), ReLU on the un-normalised image
embedding f; f' = α·A(f) + (1 − α)·f with α = 0.2; the text classifier is the frozen zero-shot one. c follows the
backbone's embedding width (512 on ViT-B/16; the official code's 1024 is RN50's). ViT-B/16: 131,072 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.methods.base import Method


@dataclass(frozen=True)
class Params:
    reduction: int = 4          # bottleneck c → c/reduction
    alpha: float = 0.2          # residual ratio: weight of the adapted feature


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"reduction": "[1, inf)", "alpha": "[0, 1]"}


class ClipAdapter(Method):
    """Visual residual adapter over a frozen CLIP."""

    name = "clip_adapter"
    Params = Params
    frozen_image_tower = True
    frozen_text_tower = True

    def setup(self) -> None:
        dim = self.clip.visual.output_dim                                   # embedding width (512 on ViT-B/16)
        self.adapter = nn.Sequential(
            nn.Linear(dim, dim // self.p.reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(dim // self.p.reduction, dim, bias=False), nn.ReLU(inplace=True),
        )

    def adapt(self, f: torch.Tensor) -> torch.Tensor:
        return self.p.alpha * self.adapter(f) + (1 - self.p.alpha) * f      # (B, D)

    def head(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return super().head(self.adapt(image_features), text_features)
