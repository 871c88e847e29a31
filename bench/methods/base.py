"""The method interface: which tensors train, how logits are formed for a list of class names, the loss.

Usage (what a new method looks like: this file's class plus a card naming it, `implementation: module:Class`):
    >>> @dataclass(frozen=True)
    ... class Params:
    ...     alpha: float = 0.2          # residual ratio
    >>> class MyMethod(Method):
    ...     Params = Params
    ...     def setup(self): ...        # add modules, choose trainable tensors
    ...     def image_features(self, images): ...

What flows: `forward(images)` returns an `Output` — the logits and what the loss needs besides them (the class
text features and image features the logits came from, method-specific `extras`) — and `loss(output, labels)`
reads only that: nothing is set on the method in forward and read back in loss. References to the untouched model
(ClipFit's frozen class features, KgCoOp's hand-crafted ones) are taken once, in `capture_references`, at build.
The harness owns the loop (optimizer, schedule, AMP, checkpoints); a method never steps an optimizer.
Default behaviour is CLIP's: logits = exp(logit_scale) · cos(image feature, class text feature).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbone import Backbone, encode_text, truncate_tokens
from bench.errors import BenchError

logger = logging.getLogger(__name__)

IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)


class Output(NamedTuple):
    """One forward pass: the logits and what the loss needs besides them (a captured CUDA graph replays exactly
    this dataflow, so nothing may travel from forward to loss any other way)."""

    logits: torch.Tensor                            # (B, C)
    text: torch.Tensor | None = None                # (C, D) the class text features the logits used (un-normalised)
    image: torch.Tensor | None = None               # (B, D) the image features the logits used (un-normalised)
    extras: dict[str, torch.Tensor] | None = None   # method-specific (PromptSRC: the frozen tower's image features)

    def float_logits(self) -> Output:
        """The same output with fp32 logits (the loss runs in fp32 whatever the autocast)."""
        return self._replace(logits=self.logits.float())


@dataclasses.dataclass(frozen=True)
class NoParams:
    pass


@dataclasses.dataclass
class FitData:
    """What a method may use beyond the training loop (`before_training` / `after_training`): the cell's few-shot
    draw and the means to encode it. Tip-Adapter builds its cache from `train` and searches on `val_full`."""

    train: list                      # the few-shot training items (what the trainer sees)
    val: list                        # the few-shot validation draw (Dassl: min(K, 4) per class)
    val_full: list                   # every validation item of the training classes
    cfg: Any                         # the cell's TrainConfig (batch size, rrc_scale, fast path, precision)
    device: torch.device
    seed: int
    features: Any = None             # items → (N, D) fp32 frozen-tower image features (the evaluator's, cached)
    test: list = dataclasses.field(default_factory=list)   # test items, given only to settings that select on them


def parse_params(cls, params: dict[str, Any], method: str):
    valid = {f.name: f.default for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items())
        raise BenchError(f"method '{method}': unknown parameter(s) {', '.join(unknown)}; valid: {listing}")
    return cls(**params)


class Method(nn.Module):
    """Base class: frozen CLIP, text features from templates, CLIP logits, cross-entropy."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    trains: ClassVar[bool] = True
    frozen_image_tower: ClassVar[bool] = False   # test image features can be cached and shared
    frozen_text_tower: ClassVar[bool] = False    # class text features are computed once per class list
    supports_new_classes: ClassVar[bool] = True
    sized_by_data: ClassVar[bool] = False       # trainable tensors are created in `before_training` (Tip-Adapter-F)

    def __init__(self, backbone: Backbone, classnames: list[str], template: str, params: dict, dataset: str = "",
                 truncate_text: bool = True):
        super().__init__()
        self.backbone = backbone
        self.dataset = dataset
        self.truncate_text = truncate_text          # encode prompts only up to their end-of-text (exact; fast path)
        self.p = parse_params(self.Params, params, self.name)
        self.clip = backbone.fresh_model()
        for prm in self.clip.parameters():
            prm.requires_grad_(False)
        self.classnames: list[str] = []
        self.trained_classnames: list[str] = list(classnames)     # the classes the method is trained on
        self.template = template
        self._text_cache: torch.Tensor | None = None
        self.setup()
        self.set_classnames(classnames, self.method_template(template))
        with torch.no_grad():                       # the model is still the untouched CLIP (plus fresh tensors)
            self.capture_references()
        n = self.count_trainable()
        if self.trains and n == 0 and not self.sized_by_data:
            raise RuntimeError(f"method '{self.name}' selected no trainable parameters on {backbone.name}")
        total = sum(p.numel() for p in self.parameters())
        logger.info("%s: trainable %s / %s (%.4f%%)", self.name, f"{n:,}", f"{total:,}", 100 * n / max(total, 1))

    # -- what subclasses override --
    def setup(self) -> None:
        """Add modules and mark trainable tensors (requires_grad)."""

    def capture_references(self) -> None:
        """Called once at build, after `setup` and the first (training) class list, while CLIP is untouched and
        under no_grad: register what the loss compares against (buffers, persistent=False, so they move with the
        model and stay out of checkpoints). Retargeting to other classes later does not call it again."""

    def method_template(self, dataset_template: str) -> str:
        """The prompt template this method uses for the dataset (a card may override per dataset)."""
        overrides = getattr(self.p, "templates", None) or {}
        return overrides.get(self.dataset, dataset_template)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, D) un-normalised image features."""
        return self.clip.encode_image(images)

    def head(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Logits from un-normalised image features (B, D) and class text features (C, D)."""
        img = F.normalize(image_features, dim=-1)
        txt = F.normalize(text_features, dim=-1)
        return self.clip.logit_scale.exp() * img @ txt.t()          # (B, C)

    def compute_text_features(self) -> torch.Tensor:
        """(C, D) class text features through the (possibly tuned) text tower."""
        return encode_text(self.clip, self.tokens_on_device(self.class_tokens))

    def loss(self, out: Output, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, named detached parts for the log) from what `forward` returned (fp32 logits). Parts stay
        tensors: reading them would sync a GPU."""
        ce = F.cross_entropy(out.logits, labels)
        return ce, {"ce": ce.detach()}

    # -- hooks around the training loop (no-ops unless a method needs them) --
    def before_training(self, data: FitData) -> None:
        """Called by the cell before training (and for methods that do not train): data-dependent set-up."""

    def after_training(self, data: FitData) -> None:
        """Called by the cell after training, before evaluation (e.g. a hyperparameter search on validation)."""

    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        """Called by the trainer after each epoch (1-based), before the checkpoint is written (epoch schedules)."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Training state beyond the trainable tensors that a resumed run needs (checkpointed with them)."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `extra_state` returned."""

    def optimizer_options(self) -> dict[str, Any]:
        """Extra keyword arguments for the optimizer the card names (Tip-Adapter-F: AdamW eps)."""
        return {}

    # -- shared machinery --
    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def tokens_on_device(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids come from the tokenizer on the CPU; every lookup happens where the model lives (the class
        tokens are a buffer, already there: no copy per step)."""
        return tokens.to(self.device)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(n, L) token ids on the CPU, cut after the batch's last end-of-text token when truncate_text is on."""
        tokens = self.backbone.tokenize(texts)
        return truncate_tokens(self.clip, tokens) if self.truncate_text else tokens

    def set_classnames(self, classnames: list[str], template: str | None = None) -> None:
        """Rebuild the classifier for a new class list (base-to-new, cross-dataset)."""
        self.classnames = list(classnames)
        if template is not None:
            self.template = template
        self.set_class_tokens(self.tokenize([self.template.format(c) for c in self.classnames]))
        self._text_cache = None

    def set_class_tokens(self, tokens: torch.Tensor) -> None:
        """(C, L) class prompt token ids, kept as a buffer on the model's device (it moves with the model)."""
        self.register_buffer("class_tokens", tokens.to(self.device), persistent=False)

    def can_classify(self, classnames: list[str]) -> bool:
        """Methods with a text classifier name any class; a linear head only the classes it was trained on."""
        return self.supports_new_classes or set(classnames) <= set(self.trained_classnames)

    def retarget(self, classnames: list[str], dataset: str, dataset_template: str) -> None:
        """Point the trained model at another class list / dataset (new classes, cross-dataset targets)."""
        if not self.can_classify(classnames):
            missing = [c for c in classnames if c not in self.trained_classnames]
            raise BenchError(f"method '{self.name}' cannot classify classes it was not trained on "
                             f"(e.g. '{missing[0]}')")
        self.dataset = dataset
        self.set_classnames(classnames, self.method_template(dataset_template))

    def text_features(self) -> torch.Tensor:
        """Class text features; recomputed every training step unless the text tower is frozen."""
        if self._text_cache is not None:
            return self._text_cache
        if self.frozen_text_tower or not self.training:
            with torch.no_grad():      # cached in fp32 whatever the autocast it was computed under
                self._text_cache = self.compute_text_features().float()
            return self._text_cache
        return self.compute_text_features()

    def train(self, mode: bool = True):
        self._text_cache = None if not self.frozen_text_tower else self._text_cache
        return super().train(mode)

    def forward(self, images: torch.Tensor) -> Output:
        image = self.image_features(images)
        text = self.text_features()
        return Output(self.head(image, text), text=text, image=image)

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """For frozen image towers: logits from cached `clip.encode_image` features."""
        return self.head(image_features, self.text_features())

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def count_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.trainable_parameters().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable_parameters()
        missing = sorted(set(params) - set(state))
        if missing:
            raise BenchError(f"checkpoint lacks trainable tensor(s) {', '.join(missing[:3])}")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n])
        self._text_cache = None
