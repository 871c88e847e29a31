"""MaPLe (Khattak et al., CVPR 2023, arXiv 2210.03117): coupled deep prompts in both towers.

Usage:
    $ bench run --methods maple --protocol base2new
    $ bench run --methods maple --set depth=3                # the cross-dataset / DG configuration

As the official trainer (muzairkhattak/multimodal-prompt-learning trainers/maple.py, clip/model.py):
- text: 2 learned context tokens initialised from "a photo" in the prompt "a photo of a {name}." (the frozen "of a"
  stays), and for blocks 1 … J−1 (J = depth, 9) a fresh set of 2 text prompts replaces those positions;
- vision: every text prompt is projected to the image tower's width by its own Linear(width_t → width_v) (one for
  the first-layer context, J−1 for the deep ones, all deep ones starting from one shared initialisation as the
  code's clones do) and appended after the patch tokens (layer 0, after the positional embedding, before ln_pre) or
  replaces the last 2 tokens (blocks 1 … J−1).
Trainable on ViT-B/16: ctx 2·512 + proj (512·768 + 768) + 8 deep text prompts 2·512 + 8 deep projections
(512·768 + 768) = 3,555,072 (the paper's "3.55M"). Depth is capped at the towers' block count (small models).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from bench.backbone import encode_image_prompted, prompt_hook, text_blocks, vision_blocks
from bench.methods.prompting import PromptLearning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Params:
    n_ctx: int = 2                          # learned tokens per layer (both towers)
    ctx_init: str = "a photo of a"          # first n_ctx words initialise the context; the prompt keeps all words
    depth: int = 9                          # prompt depth J: layer 0 plus blocks 1 … J−1
    init_std: float = 0.02                  # deep text prompts (and random-init context)


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"n_ctx": "[1, inf)", "depth": "[1, inf)", "init_std": "(0, inf)"}


class MaPLe(PromptLearning):
    """Multi-modal prompt learning: text prompts coupled to vision prompts by linear maps, J layers deep."""

    name = "maple"
    Params = Params

    def setup(self) -> None:
        p = self.p
        width_t = self.clip.token_embedding.weight.shape[1]
        width_v = self.clip.visual.class_embedding.shape[0]
        self.depth = min(p.depth, len(text_blocks(self.clip)), len(vision_blocks(self.clip)))
        if self.depth < p.depth:
            logger.info("maple: prompt depth %d capped at the towers' %d blocks", p.depth, self.depth)
        self.proj = nn.Linear(width_t, width_v)                              # first-layer context → vision
        self.ctx = nn.Parameter(self.init_context(p.n_ctx, p.ctx_init, p.init_std))
        self.deep_text = nn.ParameterList(
            [nn.Parameter(torch.empty(self.n_ctx, width_t).normal_(0, p.init_std)) for _ in range(self.depth - 1)])
        single = nn.Linear(width_t, width_v)
        self.deep_proj = nn.ModuleList([copy.deepcopy(single) for _ in range(self.depth - 1)])

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        deep = {i + 1: proj(prompt) for i, (proj, prompt) in enumerate(zip(self.deep_proj, self.deep_text))}
        return encode_image_prompted(self.clip, images, self.proj(self.ctx), prompt_hook(deep, -self.n_ctx))

    def compute_text_features(self) -> torch.Tensor:
        deep = {i + 1: prompt for i, prompt in enumerate(self.deep_text)}
        return self.encode_prompts(self.assemble(self.ctx), prompt_hook(deep, 1))
