"""Full fine-tuning: every parameter of both towers (and the logit scale) trains.

Usage:
    $ bench run --methods full_ft --shots 16

No paper prescribes a recipe for CLIP few-shot full fine-tuning; bench's (methods/full_ft.yaml) follows the
reference's proposal and is documented there: AdamW lr 1e-5, wd 0.1, 50 linear warm-up iterations then
per-iteration cosine, the CLIP-LoRA budget of 500 × K iterations, batch 32, classifier = the dataset template's
text features recomputed every step, CE on exp(logit_scale)·cos. `lam` > 0 adds ClipFit's text-feature
regulariser as an ablation. ViT-B/16: 149,620,737 trainable parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.methods.base import Method


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

    def set_classnames(self, classnames: list[str], template: str | None = None) -> None:
        super().set_classnames(classnames, template)
        if self.p.lam > 0 and not hasattr(self, "frozen_text"):
            with torch.no_grad():
                self.register_buffer("frozen_text", F.normalize(self.compute_text_features(), dim=-1),
                                     persistent=False)

    def text_features(self) -> torch.Tensor:
        self._last_text = super().text_features()
        return self._last_text

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = F.cross_entropy(logits, labels)
        if self.p.lam <= 0:
            return ce, {"ce": ce.detach()}
        reg = 1.0 - (F.normalize(self._last_text, dim=-1) * self.frozen_text).sum(-1).mean()
        return ce + self.p.lam * reg, {"ce": ce.detach(), "reg": reg.detach()}
