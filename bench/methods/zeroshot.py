"""Zero-shot CLIP (Radford et al. 2021, arXiv 2103.00020): the reference row; nothing trains.

Usage:
    $ bench run --methods zeroshot --datasets dtd --data-root $DATA

With `ensemble: true` it averages the normalised text features of CoOp's 7 ImageNet templates plus the
dataset's own template (CoOp's ZeroshotCLIP2), then re-normalises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.backbone import encode_text
from bench.methods.base import IMAGENET_TEMPLATES_SELECT, Method


@dataclass(frozen=True)
class Params:
    ensemble: bool = False       # CoOp ZeroshotCLIP2: 7 ImageNet templates + the dataset's own


class ZeroShot(Method):
    """CLIP with a hand-crafted prompt per class."""

    name = "zeroshot"
    Params = Params
    trains = False
    frozen_image_tower = True
    frozen_text_tower = True

    def compute_text_features(self) -> torch.Tensor:
        if not self.p.ensemble:
            return super().compute_text_features()
        templates = list(IMAGENET_TEMPLATES_SELECT)
        if self.dataset != "imagenet" and self.template not in templates:
            templates.append(self.template)
        feats = []
        for t in templates:                                           # each (C, D), normalised
            tokens = self.tokens_on_device(self.tokenize([t.format(c) for c in self.classnames]))
            feats.append(F.normalize(encode_text(self.clip, tokens), dim=-1))
        return F.normalize(torch.stack(feats).mean(0), dim=-1)       # (C, D)
