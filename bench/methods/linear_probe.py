"""Linear probe (Radford et al. 2021, arXiv 2103.00020): logistic regression on frozen image features.

Usage:
    $ bench run --methods linear_probe --shots 16

Solver (a documented choice; CLIP used L-BFGS with a C sweep on validation): multinomial logistic regression
W·f̂ + b on L2-normalised frozen image features of the augmented training images, trained with the shared
trainer: AdamW, weight decay as the L2 regulariser (card), W and b initialised at zero. Trainable: C × D + C.
It cannot name classes it was not trained on, so base-to-new reports no new-class accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.base import Method


@dataclass(frozen=True)
class Params:
    feature_scale: float = 10.0     # multiplies f̂ so logits reach useful magnitudes early in training


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"feature_scale": "(0, inf)"}


class LinearProbe(Method):
    name = "linear_probe"
    Params = Params
    frozen_image_tower = True
    frozen_text_tower = True
    supports_new_classes = False

    def setup(self) -> None:
        dim = self.clip.visual.output_dim
        self.linear = nn.Linear(dim, self._n_classes_hint)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def __init__(self, backbone, classnames, template, params, dataset="", **options):
        self._n_classes_hint = len(classnames)
        super().__init__(backbone, classnames, template, params, dataset, **options)

    def compute_text_features(self) -> torch.Tensor:
        return torch.zeros(0, device=self.device)   # no text classifier

    def head(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        logits = self.linear(self.p.feature_scale * F.normalize(image_features, dim=-1))   # (B, C_trained)
        if self.classnames == self.trained_classnames:
            return logits
        rows = [self.trained_classnames.index(c) for c in self.classnames]            # subset, e.g. ImageNet-A
        return logits[:, rows]
