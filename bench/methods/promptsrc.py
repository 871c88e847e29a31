"""PromptSRC (Khattak et al., ICCV 2023, arXiv 2307.06948): deep prompts in both towers, self-regularised.

Usage:
    $ bench run --methods promptsrc --protocol base2new
    $ bench run --methods promptsrc --set text_loss_weight=0 --set image_loss_weight=0   # no consistency terms

As the official trainer (muzairkhattak/PromptSRC trainers/promptsrc.py, clip/model.py, independent V-L prompts):
- text: 4 context tokens initialised from "a photo of a"; blocks 1 … J_t−1 each replace them with their own 4
  learned tokens; vision: 4 learned tokens appended after the patch tokens (after the positional embedding, before
  ln_pre), blocks 1 … J_v−1 each replacing them with their own. J = 9 on both towers: ViT-B/16 4·512 + 8·4·512 +
  4·768 + 8·4·768 = 46,080 trainable values.
- loss = CE + λ_t · L1(t̂, t̂⁰) + λ_v · L1(f̂, f̂⁰) + KL(p⁰ ‖ p) summed and divided by B·C, where t⁰ is the frozen
  model's class feature averaged over the 60 ImageNet templates (textual diversity; un-normalised features
  averaged, then normalised), f⁰ the frozen model's image feature of the same augmented image, and p⁰ the
  frozen model's class probabilities from those (λ_t = 25, λ_v = 10).
- Gaussian prompt aggregation: after epoch e (1-based) the trainable tensors are added to a running sum with weight
  N(e; μ, σ²) normalised over the epochs; after the last epoch the model becomes that sum. μ and σ are the card's
  (in epochs of a `gpa_epochs`-epoch schedule) and scale with the epoch budget, so a shortened run (the mini suite)
  keeps the same relative weighting.
The frozen model is this model without its prompts (the prompts are separate tensors), so no second copy is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbone import encode_image_prompted, encode_text, prompt_hook, text_blocks, vision_blocks
from bench.errors import BenchError
from bench.methods.base import Output
from bench.methods.prompting import PromptLearning
from bench.methods.templates import IMAGENET_TEMPLATES


@dataclass(frozen=True)
class Params:
    n_ctx_text: int = 4
    n_ctx_vision: int = 4
    ctx_init: str = "a photo of a"
    depth_text: int = 9                     # J_t ≥ 1
    depth_vision: int = 9                   # J_v ≥ 0 (0: no visual prompts)
    init_std: float = 0.02
    text_loss_weight: float = 25.0          # λ_t
    image_loss_weight: float = 10.0         # λ_v
    gpa_mean: float = 15.0                  # μ of the Gaussian over epochs 1 … gpa_epochs
    gpa_std: float = 1.0                    # σ
    gpa_epochs: int = 20                    # the schedule length μ and σ refer to (the card's epochs)
    gpa_scope: str = "prompts"              # prompts (summed in fp32) | model (the official code: the whole state
                                            # dict, frozen CLIP included, each tensor in its own dtype)


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"n_ctx_text": "[1, inf)", "n_ctx_vision": "[1, inf)", "depth_text": "[1, inf)", "depth_vision": "[0, inf)",
          "init_std": "(0, inf)", "text_loss_weight": "[0, inf)", "image_loss_weight": "[0, inf)", "gpa_mean": "(0, inf)",
          "gpa_std": "(0, inf)", "gpa_epochs": "[1, inf)", "gpa_scope": ["prompts", "model"]}


def gpa_weights(total_epochs: int, mean: float, std: float, ref_epochs: int) -> list[float]:
    """Normalised Gaussian weights of epochs 1 … total_epochs (PromptSRC's `get_gauss` over range(1, N + 1)),
    with μ and σ scaled by total_epochs / ref_epochs."""
    scale = total_epochs / ref_epochs
    mu, sigma = mean * scale, std * scale
    g = [math.exp(-0.5 * ((e - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)) for e in range(1, total_epochs + 1)]
    total = sum(g)
    return [x / total for x in g]


class PromptSRC(PromptLearning):
    """Independent vision-language deep prompts with self-regulating constraints and Gaussian aggregation."""

    name = "promptsrc"
    Params = Params

    def setup(self) -> None:
        p = self.p
        if p.depth_text < 1:
            raise BenchError("promptsrc: depth_text must be at least 1 (the text context)")
        width_t = self.clip.token_embedding.weight.shape[1]
        width_v = self.clip.visual.class_embedding.shape[0]
        depth_t = min(p.depth_text, len(text_blocks(self.clip)))
        depth_v = min(p.depth_vision, len(vision_blocks(self.clip)))

        def prompts(n: int, width: int, count: int) -> nn.ParameterList:
            return nn.ParameterList([nn.Parameter(torch.empty(n, width).normal_(0, p.init_std)) for _ in range(count)])

        self.visual_prompt = nn.Parameter(torch.empty(p.n_ctx_vision, width_v).normal_(0, p.init_std)) \
            if depth_v > 0 else None
        self.deep_vision = prompts(p.n_ctx_vision, width_v, max(depth_v - 1, 0))
        self.deep_text = prompts(p.n_ctx_text, width_t, depth_t - 1)
        self.ctx = nn.Parameter(self.init_context(p.n_ctx_text, p.ctx_init, p.init_std))
        self._gpa: dict[str, torch.Tensor] = {}

    def capture_references(self) -> None:
        """t⁰: the untouched model's features averaged over the 60 templates, for the training classes."""
        names = [c.replace("_", " ") for c in self.classnames]
        tokens = self.tokenize([t.format(n) for t in IMAGENET_TEMPLATES for n in names])          # (T·C, L)
        feats = torch.cat([encode_text(self.clip, self.tokens_on_device(tokens[i:i + 4096]))
                           for i in range(0, len(tokens), 4096)])
        feats = feats.view(len(IMAGENET_TEMPLATES), len(names), -1).mean(0)                      # (C, D)
        self.register_buffer("frozen_text", F.normalize(feats, dim=-1), persistent=False)

    # -- the prompted towers --
    def forward(self, images: torch.Tensor) -> Output:
        frozen = None
        if self.training:                                   # f⁰ for the image consistency and the logit KL
            with torch.no_grad():
                frozen = F.normalize(self.clip.encode_image(images).float(), dim=-1)
        out = super().forward(images)
        return out if frozen is None else out._replace(extras={"frozen_image": frozen})

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        deep = {i + 1: prompt for i, prompt in enumerate(self.deep_vision)}
        hook = prompt_hook(deep, -self.p.n_ctx_vision) if deep else None
        return encode_image_prompted(self.clip, images, self.visual_prompt, hook)

    def compute_text_features(self) -> torch.Tensor:
        deep = {i + 1: prompt for i, prompt in enumerate(self.deep_text)}
        return self.encode_prompts(self.assemble(self.ctx), prompt_hook(deep, 1) if deep else None)

    # -- self-regulating constraints --
    def consistency(self, out: Output) -> dict[str, torch.Tensor]:
        """The three terms of L_SCL (unweighted) for a training forward's output."""
        text = F.normalize(out.text.float(), dim=-1)
        image = F.normalize(out.image.float(), dim=-1)
        frozen_image = out.extras["frozen_image"]
        frozen_logits = self.clip.logit_scale.exp() * frozen_image @ self.frozen_text.t()
        kl = F.kl_div(F.log_softmax(out.logits, dim=1), F.log_softmax(frozen_logits, dim=1), reduction="sum",
                      log_target=True) / out.logits.numel()
        return {"l1_text": F.l1_loss(text, self.frozen_text), "l1_image": F.l1_loss(image, frozen_image), "kl": kl}

    def loss(self, out: Output, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = F.cross_entropy(out.logits, labels)
        scl = self.consistency(out)
        total = ce + self.p.text_loss_weight * scl["l1_text"] + self.p.image_loss_weight * scl["l1_image"] + scl["kl"]
        return total, {"ce": ce.detach(), **{k: v.detach() for k, v in scl.items()}}

    # -- Gaussian prompt aggregation --
    def gpa_tensors(self) -> dict[str, torch.Tensor]:
        """What GPA averages: the trainable tensors, and with gpa_scope "model" every floating tensor of CLIP's
        state too (the official trainer averages `model.state_dict()`, frozen weights included)."""
        tensors = dict(self.trainable_parameters())
        if self.p.gpa_scope == "model":
            tensors.update({f"clip.{n}": t for n, t in self.clip.state_dict(keep_vars=True).items()
                            if t.is_floating_point() and not t.requires_grad})
        return tensors

    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        weight = gpa_weights(total_epochs, self.p.gpa_mean, self.p.gpa_std, self.p.gpa_epochs)[epoch - 1]
        own_dtype = self.p.gpa_scope == "model"                 # official: tensor * weight in the tensor's dtype
        tensors = self.gpa_tensors()
        with torch.no_grad():
            for n, prm in tensors.items():
                term = prm.detach() * weight if own_dtype else prm.detach().float() * weight
                self._gpa[n] = term if epoch == 1 or n not in self._gpa else self._gpa[n] + term
            if epoch == total_epochs:                       # the aggregate is the final model
                for n, prm in tensors.items():
                    prm.copy_(self._gpa[n])
        self._text_cache = None

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {f"gpa.{n}": v for n, v in self._gpa.items()}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        device = self.device
        self._gpa = {k[4:]: v.to(device) for k, v in state.items() if k.startswith("gpa.")}
