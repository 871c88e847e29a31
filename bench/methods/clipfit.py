"""ClipFit (Li et al., EMNLP 2024, arXiv 2409.16718): tune only the text FFN output biases and image LayerNorms.

Usage:
    $ bench run --methods clipfit --shots 16

Trainable: `mlp.c_proj.bias` of every text block (ViT-B/16: 12 × 512) and γ/β of every LayerNorm of the image
tower — ln_pre, ln_1/ln_2 of each block, ln_post (ViT-B/16: 26 × 2 × 768). Total 46,080 on ViT-B/16.
Loss = CE + λ · (1 − mean_c cos(t_c, t_c⁰)) (bench/methods/text_anchor.py), where t_c⁰ are the frozen model's class
text features captured once at build and the mean runs over the C training classes (not the batch). λ: the card.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bench.backbone import text_blocks
from bench.methods.base import Method, Output
from bench.methods.text_anchor import anchored_loss, unit_rows


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

    def capture_references(self) -> None:
        """t_c⁰: the untouched model's features of the training classes' prompts."""
        self.register_buffer("text_anchor", unit_rows(self.compute_text_features()), persistent=False)

    def loss(self, out: Output, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return anchored_loss(out, labels, self.text_anchor, self.p.lam, "reg")
