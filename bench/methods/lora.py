"""CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024, arXiv 2405.18541): low-rank updates on q/k/v of both towers.

Usage:
    $ bench run --methods lora --shots 16
    $ bench run --methods lora --set targets=[q,k,v,o] --set encoder=vision

Defaults as the paper ran them: r = 2, α = 1, scaling α/√r, dropout 0.25 on the LoRA input, every block of both
towers, q/k/v. Training (card): AdamW 2e-4, wd 1e-2, 500 × K iterations, per-iteration cosine to 1e-6, batch 32.
The classifier is recomputed through the tuned text tower at every step with one generic template
("a photo of a {}." by default, as CLIP-LoRA). ViT-B/16: 184,320 trainable parameters.
CLIP-LoRA hard-codes the logit scale to 100, which equals exp(logit_scale) of OpenAI CLIP; bench uses the
model's own value, so the recipe carries over to other backbones.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.methods.base import Method
from bench.methods.lora_layers import LoRALinear, inject_lora


@dataclass(frozen=True)
class Params:
    r: int = 2
    alpha: float = 1.0
    dropout: float = 0.25
    targets: tuple = ("q", "k", "v")     # any of q, k, v, o
    encoder: str = "both"                # both | vision | text
    layers: tuple | None = None          # block indices; None = all
    template: str | None = "a photo of a {}."   # None = the dataset's template


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"r": "[1, inf)", "alpha": "(0, inf)", "dropout": "[0, 1)", "targets": ["q", "k", "v", "o"],
          "encoder": ["both", "vision", "text"], "layers": "[0, inf)"}


class LoRA(Method):
    """Low-rank adaptation of the attention projections."""

    name = "lora"
    Params = Params

    def setup(self) -> None:
        p = self.p
        layers = list(p.layers) if p.layers is not None else None
        towers = {"both": ("vision", "text"), "vision": ("vision",), "text": ("text",)}[p.encoder]
        for tower in towers:
            transformer = self.clip.visual.transformer if tower == "vision" else self.clip.transformer
            inject_lora(transformer, tuple(p.targets), p.r, p.alpha, p.dropout, layers)
        for module in self.clip.modules():
            if isinstance(module, LoRALinear):
                module.lora_A.requires_grad_(True)
                module.lora_B.requires_grad_(True)

    def method_template(self, dataset_template: str) -> str:
        return self.p.template or dataset_template

    def lora_modules(self) -> dict[str, LoRALinear]:
        return {n: m for n, m in self.clip.named_modules() if isinstance(m, LoRALinear)}
