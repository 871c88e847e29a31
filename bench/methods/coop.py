"""CoOp (Zhou et al., IJCV 2022, arXiv 2109.01134): learn the prompt's context vectors, CLIP frozen.

Usage:
    $ bench run --methods coop --shots 1,2,4,8,16
    $ bench run --methods coop --set ctx_init="a photo of a" --set class_token_position=middle

Each class prompt is [SOS][v_1 … v_M][name tokens][.][EOS][pad…], built from the string "X X … X {name}." so that
tokenisation fixes positions. Only the context trains: M × width (unified) or C × M × width (class-specific,
random init only). All class prompts go through the text tower at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.errors import BenchError
from bench.methods.prompting import PromptLearning


@dataclass(frozen=True)
class Params:
    n_ctx: int = 16                         # context length M (ignored when ctx_init is given)
    ctx_init: str = ""                      # e.g. "a photo of a": init from those words' embeddings, M = #words
    class_token_position: str = "end"       # end | middle | front
    csc: bool = False                       # class-specific context (random init only)
    init_std: float = 0.02                  # N(0, init_std²) for random init


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"n_ctx": "[1, inf)", "class_token_position": ["end", "middle", "front"], "init_std": "(0, inf)"}


class CoOp(PromptLearning):
    """Context optimisation: learnable prompt vectors shared by all classes (or per class)."""

    name = "coop"
    Params = Params
    frozen_image_tower = True

    def setup(self) -> None:
        p = self.p
        if p.class_token_position not in ("end", "middle", "front"):
            raise BenchError(f"coop: class_token_position must be end, middle or front, got {p.class_token_position!r}")
        leading = (self._n_classes_hint,) if p.csc and not p.ctx_init else ()
        self.ctx = nn.Parameter(self.init_context(None if p.ctx_init else p.n_ctx, p.ctx_init, p.init_std, leading))

    def __init__(self, backbone, classnames, template, params, dataset="", **options):
        self._n_classes_hint = len(classnames)
        super().__init__(backbone, classnames, template, params, dataset, **options)

    def set_classnames(self, classnames: list[str], template: str | None = None) -> None:
        if self.p.csc and self.ctx.dim() == 3 and len(classnames) != self.ctx.shape[0]:
            raise BenchError("coop with class-specific context cannot be rebuilt for a different class list")
        super().set_classnames(classnames, template)

    def prompts(self) -> torch.Tensor:
        """(C, L, width) prompt embeddings with the context placed per class_token_position."""
        pos = self.p.class_token_position
        if pos == "end":
            return self.assemble(self.ctx)
        n_cls = self.token_prefix.shape[0]
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(n_cls, -1, -1)   # (C, M, width)
        prefix, suffix = self.token_prefix, self.token_suffix
        half = self.n_ctx // 2
        rows = []
        for i, n in enumerate(self.name_lens):
            name, rest = suffix[i:i + 1, :n], suffix[i:i + 1, n:]                                # (1, n, w), (1, *, w)
            if pos == "middle":
                rows.append(torch.cat([prefix[i:i + 1], ctx[i:i + 1, :half], name, ctx[i:i + 1, half:], rest], 1))
            else:
                rows.append(torch.cat([prefix[i:i + 1], name, ctx[i:i + 1], rest], 1))
        return torch.cat(rows, dim=0)

    def compute_text_features(self) -> torch.Tensor:
        return self.encode_prompts(self.prompts())
