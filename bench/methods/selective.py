"""Selective tuning: which of CLIP's own tensors train, chosen per tower — the ClipFit ablation grid and BitFit.

Usage:
    $ bench run --methods clipfit,clipfit_text_only,clipfit_image_only,clipfit_text_bias,clipfit_image_bias
    $ bench run --methods bitfit
    $ bench run --methods selective --set text=bias --set image=none       # any cell of the grid

One method with named presets, each a card only (`methods/clipfit_*.yaml` name this class as their implementation
and extend `clipfit.yaml`, so every preset runs ClipFit's recipe and its text regulariser λ; `clipfit` itself stays
bench/methods/clipfit.py):

| text \\ image          | `layernorm` (ClipFit)  | `bias`                    | `none`                     |
| `cproj_bias` (ClipFit) | clipfit                | clipfit_image_bias        | clipfit_text_only          |
| `bias`                 | clipfit_text_bias      | clipfit_all_bias          | clipfit_text_bias_only     |
| `none`                 | clipfit_image_only     | clipfit_image_bias_only   | —                          |

Tensor sets: text `cproj_bias` = mlp.c_proj.bias of every block (ClipFit); `bias` = every tensor of the text tower
whose name ends in "bias" (attention in/out, FFN c_fc/c_proj, LayerNorm β, ln_final β); image `layernorm` = γ and β
of every LayerNorm (ClipFit); `bias` = every bias of the image tower (LayerNorm β included). BitFit (Ben Zaken et al.
2022; its code's `all` option selects every parameter named "bias", LayerNorm's included) is text `bias` + image
`bias` without the regulariser: ViT-B/16 68,096 + 102,912 = 171,008 values. A frozen tower stays frozen in
evaluation too (its features are cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from bench.backbone import text_blocks
from bench.errors import BenchError
from bench.methods.clipfit import ClipFit

TEXT_SETS = ("cproj_bias", "bias", "none")
IMAGE_SETS = ("layernorm", "bias", "none")


@dataclass(frozen=True)
class Params:
    text: str = "cproj_bias"                            # cproj_bias | bias | none
    image: str = "layernorm"                            # layernorm | bias | none
    lam: float = 8.0                                    # ClipFit's text-feature regulariser (0: plain CE)
    templates: dict = field(default_factory=dict)


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"text": ["cproj_bias", "bias", "none"], "image": ["layernorm", "bias", "none"], "lam": "[0, inf)"}


def text_tensors(model, which: str) -> list[nn.Parameter]:
    if which == "cproj_bias":
        return [block.mlp.c_proj.bias for block in text_blocks(model)]
    if which == "bias":
        tower = ("transformer.", "ln_final.", "text_projection.")
        return [prm for name, prm in model.named_parameters() if name.startswith(tower) and name.endswith("bias")]
    return []


def image_tensors(model, which: str) -> list[nn.Parameter]:
    if which == "layernorm":
        return [prm for m in model.visual.modules() if isinstance(m, nn.LayerNorm) for prm in m.parameters()]
    if which == "bias":
        return [prm for name, prm in model.visual.named_parameters() if name.endswith("bias")]
    return []


class SelectiveTuning(ClipFit):
    """ClipFit's recipe on a chosen set of CLIP's own tensors."""

    name = "selective"
    Params = Params

    def setup(self) -> None:
        p = self.p
        if p.text not in TEXT_SETS or p.image not in IMAGE_SETS:
            raise BenchError(f"selective: text must be one of {', '.join(TEXT_SETS)} and image one of "
                             f"{', '.join(IMAGE_SETS)}; got text={p.text!r}, image={p.image!r}")
        text, image = text_tensors(self.clip, p.text), image_tensors(self.clip, p.image)
        if p.image != "none" and not image:
            raise BenchError(f"selective: image={p.image} selects nothing in the image tower of {self.backbone.name}")
        for prm in text + image:
            prm.requires_grad_(True)
        self.frozen_text_tower = not text           # instance flags: a frozen tower's features are cached
        self.frozen_image_tower = not image
