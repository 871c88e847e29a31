"""LoRA layers for CLIP attention, after CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024, arXiv 2405.18541).

Usage:
    >>> n = inject_lora(model.visual.transformer, targets=("q", "k", "v"), r=2, alpha=1, dropout=0.25)

`LoRALinear`: y = W x + b + (α/√r) · B A dropout(x); A Kaiming-uniform (a=√5), B zero. In eval mode the update
is merged into a cached weight (W itself is never modified, so frozen tensors stay bit-identical).
`LoRAAttention` replaces a block's attention — `nn.MultiheadAttention` (open_clip 3.x) or open_clip's own
`Attention` (open_clip main) — by explicit q/k/v/o projections sliced from the packed weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    autocast_linear_params = ("weight", "bias")     # frozen W, b feed F.linear only (bench.precision)

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, r: int, alpha: float, dropout: float):
        super().__init__()
        out_f, in_f = weight.shape
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        self.r = r
        self.scaling = alpha / math.sqrt(r)                       # rsLoRA-style, as CLIP-LoRA
        self.lora_A = nn.Parameter(torch.empty(r, in_f))          # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(out_f, r))         # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._merged: torch.Tensor | None = None

    def delta(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)       # (out, in)

    def merged_weight(self) -> torch.Tensor:
        return self.weight + self.delta()

    def train(self, mode: bool = True):
        self._merged = None if mode else self._merged
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            if self._merged is None or self._merged.device != x.device:
                with torch.no_grad():
                    self._merged = self.merged_weight()
            return F.linear(x, self._merged.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        base = F.linear(x, self.weight, self.bias)
        return base + self.scaling * F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)


def _plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    lin.requires_grad_(False)
    return lin


class LoRAAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections, any of which can carry LoRA."""

    def __init__(self, attn: nn.Module, targets: tuple[str, ...], r: int, alpha: float, dropout: float):
        super().__init__()
        if isinstance(attn, nn.MultiheadAttention):
            self.num_heads, self.batch_first, self.returns_tuple = attn.num_heads, attn.batch_first, True
            if not attn._qkv_same_embed_dim:
                raise NotImplementedError("LoRA needs packed q/k/v weights")
        else:   # open_clip.transformer.Attention
            if getattr(attn, "logit_scale", None) is not None or getattr(attn, "head_scale", None) is not None:
                raise NotImplementedError("LoRA does not support scaled-cosine / head-scaled attention")
            self.num_heads, self.batch_first, self.returns_tuple = attn.num_heads, True, False
        dim = attn.in_proj_weight.shape[1]
        w, b = attn.in_proj_weight, attn.in_proj_bias
        parts = {"q": slice(0, dim), "k": slice(dim, 2 * dim), "v": slice(2 * dim, 3 * dim)}
        for name, rows in parts.items():
            wi, bi = w[rows], (b[rows] if b is not None else None)
            setattr(self, name, LoRALinear(wi, bi, r, alpha, dropout) if name in targets else _plain_linear(wi, bi))
        ow, ob = attn.out_proj.weight, attn.out_proj.bias
        self.o = LoRALinear(ow, ob, r, alpha, dropout) if "o" in targets else _plain_linear(ow, ob)

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None, **_):
        x = query if self.batch_first else query.transpose(0, 1)                  # (N, L, C)
        n, length, c = x.shape
        h = self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, length, h, c // h).transpose(1, 2)              # (N, h, L, C/h)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
        elif attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)      # (N, h, L, C/h)
        out = self.o(out.transpose(1, 2).reshape(n, length, c))                  # (N, L, C)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return (out, None) if self.returns_tuple else out


def inject_lora(transformer: nn.Module, targets: tuple[str, ...], r: int, alpha: float, dropout: float,
                layers: list[int] | None = None) -> int:
    """Replace the attention of the chosen blocks (default: all) of an open_clip Transformer; returns how many."""
    count = 0
    for i, block in enumerate(transformer.resblocks):
        if layers is not None and i not in layers:
            continue
        block.attn = LoRAAttention(block.attn, targets, r, alpha, dropout)
        count += 1
    if count == 0:
        raise RuntimeError("LoRA hooked no attention module")
    return count
