"""CoCoOp (Zhou et al., CVPR 2022, arXiv 2203.05557): context vectors shifted per image by a small meta-network.

Usage:
    $ bench run --methods cocoop --protocol base2new
    $ bench run --methods cocoop --set text_batch=256          # fewer prompt sequences per text-tower call

As the official trainer (KaiyangZhou/CoOp trainers/cocoop.py): context "a photo of a" (M = 4), a meta-net
Linear(D → D/16) → ReLU → Linear(D/16 → width) with biases maps the L2-normalised image feature to a shift π that is
added to every context vector, so every image has its own prompt set and runs all C class prompts through the text
tower; logits = exp(logit_scale) · cos(f, t_c(f)). ViT-B/16: 4 × 512 + (512·32 + 32) + (32·512 + 512) = 35,360.
The official code loops over the images of a batch; bench encodes up to `text_batch` prompt sequences per call
(whole images at a time, at least one), which is the same computation batched. The image tower is frozen, so test
image features are cached and shared with the other frozen-tower methods.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.methods.prompting import PromptLearning


@dataclass(frozen=True)
class Params:
    n_ctx: int = 4                          # context length when ctx_init is empty (random init)
    ctx_init: str = "a photo of a"          # init words (M = their token count)
    init_std: float = 0.02
    hidden_ratio: int = 16                  # meta-net bottleneck D → D / hidden_ratio
    text_batch: int = 2048                  # prompt sequences per text-tower call (memory, not semantics)


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"n_ctx": "[1, inf)", "init_std": "(0, inf)", "hidden_ratio": "[1, inf)", "text_batch": "[1, inf)"}


class CoCoOp(PromptLearning):
    """Conditional context optimisation: an image-conditioned shift of the shared context."""

    name = "cocoop"
    Params = Params
    frozen_image_tower = True

    def setup(self) -> None:
        p = self.p
        self.ctx = nn.Parameter(self.init_context(None if p.ctx_init else p.n_ctx, p.ctx_init, p.init_std))
        vis_dim = self.clip.visual.output_dim
        width = self.clip.token_embedding.weight.shape[1]
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // p.hidden_ratio)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // p.hidden_ratio, width)),
        ]))

    def text_features(self) -> torch.Tensor:
        """No image-independent classifier: the class features are built per image in `head`."""
        return self.ctx.new_zeros(0)

    def compute_text_features(self) -> torch.Tensor:
        """The class features of the unshifted context (π = 0): for inspection only."""
        return self.encode_prompts(self.assemble(self.ctx))

    def conditioned_text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, D) normalised image features → (B, C, D) normalised class features of each image's prompts."""
        shift = self.meta_net(image_features)                                     # (B, width)
        ctx = self.ctx.unsqueeze(0) + shift.unsqueeze(1)                          # (B, M, width)
        n_cls = self.token_prefix.shape[0]
        step = max(1, self.p.text_batch // max(n_cls, 1))                         # whole images per call
        out = [self.encode_prompts(self.assemble(ctx[i:i + step].unsqueeze(1)))   # (b, C, D)
               for i in range(0, ctx.shape[0], step)]
        return F.normalize(torch.cat(out), dim=-1)

    def head(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        img = F.normalize(image_features, dim=-1)                                 # (B, D)
        txt = self.conditioned_text_features(img)                                 # (B, C, D)
        return self.clip.logit_scale.exp() * torch.einsum("bd,bcd->bc", img, txt)
