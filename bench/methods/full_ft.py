"""Full fine-tuning: every parameter of both towers (and the logit scale) trains.

Usage:
    $ bench run --methods full_ft --shots 16

No paper prescribes a recipe for CLIP few-shot full fine-tuning; bench's (methods/full_ft.yaml) follows the
reference's proposal and is documented there: AdamW lr 1e-5, wd 0.1, 50 linear warm-up iterations then
per-iteration cosine, the CLIP-LoRA budget of 500 × K iterations, batch 32, classifier = the dataset template's
text features recomputed every step, CE on exp(logit_scale)·cos. `lam` > 0 adds ClipFit's text-feature
regulariser (bench/methods/text_anchor.py) as an ablation. ViT-B/16: 149,620,737 trainable parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.base import Method, Output
from bench.methods.text_anchor import anchored_loss, unit_rows


@dataclass(frozen=True)
class Params:
    lam: float = 0.0            # optional ClipFit-style regulariser weight (0 = plain CE)


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"lam": "[0, inf)"}


class FullFineTune(Method):
    name = "full_ft"
    Params = Params

    def setup(self) -> None:
        for prm in self.clip.parameters():
            prm.requires_grad_(True)

    def capture_references(self) -> None:
        if self.p.lam > 0:                  # ClipFit's anchor: the untouched model's features of the class prompts
            self.register_buffer("text_anchor", unit_rows(self.compute_text_features()), persistent=False)

    def loss(self, out: Output, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.p.lam <= 0:
            return super().loss(out, labels)
        return anchored_loss(out, labels, self.text_anchor, self.p.lam, "reg")
