"""KgCoOp (Yao et al., CVPR 2023, arXiv 2303.13283): CoOp with the learned class features kept near hand-crafted ones.

Usage:
    $ bench run --methods kgcoop --protocol base2new
    $ bench run --methods kgcoop --set w=4.0

As the official trainer (htyao89/KgCoOp trainers/kgcoop.py): a unified context initialised from "a photo of a"
(M = 4; the code uses those words whenever an init is asked for), class token at the end, CLIP frozen; only the
context trains (the repo's unused `bias_vectors` and `meta_net` are frozen there and absent here): ViT-B/16 2,048.
Loss = CE + w · (1 − mean_c cos(t_c, t_c^clip)), where t_c^clip are the frozen model's features of the dataset's
hand-crafted template (its CUSTOM_TEMPLATES: CoOp's zero-shot ones but "a photo of a {}, a type of texture." for
DTD), computed once for the training classes. The paper writes the penalty as ‖t − t^clip‖²; on unit vectors that is
2 (1 − cos), so the code's w = 8 on (1 − cos) is w = 4 on the squared distance. bench follows the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbone import encode_text
from bench.methods.prompting import PromptLearning


@dataclass(frozen=True)
class Params:
    ctx_init: str = "a photo of a"          # init words (M = their token count); "" = random init of n_ctx
    n_ctx: int = 4
    init_std: float = 0.02
    w: float = 8.0                          # weight of the hand-crafted-feature penalty
    templates: dict = field(default_factory=dict)   # dataset → hand-crafted template (DTD differs from CoOp's)


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"n_ctx": "[1, inf)", "init_std": "(0, inf)", "w": "[0, inf)"}


class KgCoOp(PromptLearning):
    """Knowledge-guided context optimisation."""

    name = "kgcoop"
    Params = Params
    frozen_image_tower = True

    def setup(self) -> None:
        p = self.p
        self.ctx = nn.Parameter(self.init_context(None if p.ctx_init else p.n_ctx, p.ctx_init, p.init_std))

    def set_classnames(self, classnames: list[str], template: str | None = None) -> None:
        super().set_classnames(classnames, template)
        if not hasattr(self, "clip_text"):
            # t^clip of the frozen model for the training classes (the model is still pristine here)
            tokens = self.tokenize([self.template.format(c.replace("_", " ")) for c in classnames])
            with torch.no_grad():
                feats = encode_text(self.clip, self.tokens_on_device(tokens))
            self.register_buffer("clip_text", F.normalize(feats, dim=-1), persistent=False)

    def text_features(self) -> torch.Tensor:
        self._last_text = super().text_features()
        return self._last_text

    def penalty(self) -> torch.Tensor:
        """1 − mean cosine between the learned and the hand-crafted class features (0 when they agree)."""
        learned = F.normalize(self._last_text, dim=-1)                              # (C, D)
        return 1.0 - (learned * self.clip_text).sum(-1).mean()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = F.cross_entropy(logits, labels)
        kg = self.penalty()
        return ce + self.p.w * kg, {"ce": ce.detach(), "kg": kg.detach()}
