"""ClipFit (Li et al., EMNLP 2024, arXiv 2409.16718): tune only the text FFN output biases and image LayerNorms.

Usage:
    $ bench run --methods clipfit --shots 16

Trainable: `mlp.c_proj.bias` of every text block (ViT-B/16: 12 × 512) and γ/β of every LayerNorm of the image
tower — ln_pre, ln_1/ln_2 of each block, ln_post (ViT-B/16: 26 × 2 × 768). Total 46,080 on ViT-B/16.
Loss = CE + λ · (1 − mean_c cos(t_c, t_c⁰)), where t_c⁰ are the frozen model's class text features computed once
at build time and the mean runs over the C training classes (not the batch). λ comes from the card.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbone import text_blocks
from bench.methods.base import Method


@dataclass(frozen=True)
class Params:
    lam: float = 8.0                                    # weight of the text-feature regulariser
    templates: dict = field(default_factory=dict)       # dataset → template (ClipFit's DTD template differs)


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"lam": "[0, inf)"}


class ClipFit(Method):
    """Bias + LayerNorm tuning with a frozen-text-feature regulariser."""

    name = "clipfit"
    Params = Params

    def setup(self) -> None:
        for block in text_blocks(self.clip):
            block.mlp.c_proj.bias.requires_grad_(True)
        n_ln = 0
        for module in self.clip.visual.modules():
            if isinstance(module, nn.LayerNorm):
                for prm in module.parameters():
                    prm.requires_grad_(True)
                n_ln += 1
        if n_ln == 0:
            raise RuntimeError(f"clipfit found no LayerNorm in the image tower of {self.backbone.name}")

    def set_classnames(self, classnames: list[str], template: str | None = None) -> None:
        super().set_classnames(classnames, template)
        if not hasattr(self, "_targets_ready"):
            # t_c⁰ of the frozen model, for the training classes only (the model is still pristine here)
            with torch.no_grad():
                self.register_buffer("frozen_text", F.normalize(self.compute_text_features(), dim=-1),
                                     persistent=False)
            self._targets_ready = True

    def regulariser(self) -> torch.Tensor:
        """1 − mean cosine between tuned and frozen class text features (0 at step 0)."""
        tuned = F.normalize(self._last_text, dim=-1)                       # (C, D)
        return 1.0 - (tuned * self.frozen_text).sum(-1).mean()

    def text_features(self) -> torch.Tensor:
        feats = super().text_features()
        self._last_text = feats
        return feats

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = F.cross_entropy(logits, labels)
        reg = self.regulariser()
        return ce + self.p.lam * reg, {"ce": ce.detach(), "reg": reg.detach()}
