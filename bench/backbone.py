"""The one door to open_clip: build a CLIP (random, hub tag, local file, TorchScript release, custom architecture,
local-dir:/hf-hub:, or named weights a provider registered, such as `mini-world`) with the activation its
weights were trained with, and its tokenizer.

Usage:
    >>> from bench.backbone import load_backbone
    >>> bb = load_backbone("ViT-B-16", "openai")             # hub tag (needs network or a warm cache): QuickGELU
    >>> bb = load_backbone("ViT-B-16", "/ckpt/ViT-B-16.pt")  # OpenAI's TorchScript release file: QuickGELU
    >>> bb = load_backbone("arch/my-vit.json", "/ckpt/w.safetensors", activation="gelu")
    >>> bb = load_backbone("bench-tiny", None)                # random weights, for tests
    >>> feats = bb.model.encode_image(images)

What the backbone is (architecture, weights, activation) is decided without torch in `bench.backbone_spec`;
this module builds it. Only this module imports open_clip. It also owns the text-tower internals that prompt
learning needs (token embeddings in, class features out).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import QuickGELU, text_global_pool

from bench.backbone_spec import (
    CONFIG_DIR,
    NAMED_WEIGHTS,
    OPENAI_EXTRA_KEYS,
    SCHEMES,
    BackboneSpec,
    is_named_weights,
    named_weights_path,
    resolve_backbone,
    sniff_weights,
    spec_from_cell,
)
from bench.errors import BenchError, did_you_mean

logger = logging.getLogger(__name__)

open_clip.add_model_config(CONFIG_DIR)


@dataclass
class Backbone:
    spec: BackboneSpec
    model: Any                 # open_clip.CLIP, eval mode, fp32
    tokenizer: Any
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str | None = None     # the resolved tag or file actually loaded

    @property
    def name(self) -> str:
        return self.spec.arch

    @property
    def pretrained(self) -> str | None:
        return self.spec.pretrained

    @property
    def activation(self) -> str:
        return self.spec.activation

    @property
    def id(self) -> str:
        """A stable identity for caches: architecture (and its config), weights (a file by path, size and mtime),
        activation."""
        weights = self.weights or "random"
        if self.weights and Path(self.weights).is_file():
            st = Path(self.weights).stat()
            weights = f"{self.weights}:{st.st_size}:{st.st_mtime_ns}"
        arch = self.name + (f"#{hash_text(self.spec.arch_json)}" if self.spec.arch_json else "")
        return f"{arch}:{weights}:{self.activation}"

    def fresh_model(self):
        """A deep copy of the pristine model: each cell mutates its own."""
        return copy.deepcopy(self.model)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)


def hash_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _register(spec: BackboneSpec) -> None:
    """Make a carried JSON architecture known to open_clip in this process (workers included)."""
    if spec.arch_json is None or open_clip.get_model_config(spec.arch) == spec.arch_config:
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-arch-"))
    (folder / f"{spec.arch}.json").write_text(spec.arch_json)
    open_clip.add_model_config(folder)


def _weights(spec: BackboneSpec) -> str | None:
    """The tag or file to load; checks a tag against open_clip and the activation bench planned for it."""
    weights = spec.pretrained
    if is_named_weights(weights):
        return named_weights_path(weights)
    if weights is None or spec.arch.startswith(SCHEMES) or Path(weights).is_file():
        return weights
    cfg = open_clip.get_pretrained_cfg(spec.arch, weights)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(spec.arch) + NAMED_WEIGHTS.names()
        raise did_you_mean(f"pretrained tag for {spec.arch}", weights, tags or ["<none: pass a local file>"])
    trained = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    if trained != spec.activation and not spec.explicit:
        raise BenchError(f"open_clip {open_clip.__version__} says tag '{weights}' of {spec.arch} was trained with "
                         f"{trained}, but bench's table (bench/quickgelu_tags.json) says {spec.activation}: pass "
                         f"--activation {trained}")
    if trained != spec.activation:
        logger.warning("tag '%s' of %s was trained with %s; building %s as asked", weights, spec.arch, trained,
                       spec.activation)
    return weights


def check_backbone(name: str, pretrained: str | None, activation: str | None = None,
                   arch_config: dict | None = None) -> BackboneSpec:
    """Validate architecture, tag/file and activation without loading weights; logs what was chosen and why."""
    spec = resolve_backbone(name, pretrained, activation, arch_config)
    if spec.notice:
        logger.warning("%s", spec.notice)
    if not is_named_weights(spec.pretrained):            # a named provider may build its weights: not here
        _weights(spec)
    logger.info("backbone %s, weights %s, activation %s (%s)", spec.label, spec.weights_label, spec.activation,
                spec.reason)
    return spec


def _openai_state_dict(path: str, kind: str) -> dict[str, torch.Tensor]:
    """OpenAI's releases: a TorchScript archive (loaded with torch.jit, never unpickled as Python objects) or its
    state dict, fp16, with three bookkeeping entries the open_clip model does not have."""
    if kind == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)          # "torch.jit is deprecated": still the format
            state = torch.jit.load(path, map_location="cpu").state_dict()
    elif path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}


def _build(spec: BackboneSpec, weights: str | None):
    # force_quick_gelu edits the config before open_clip's tag check; quick_gelu=False overrides it after
    quick = {"force_quick_gelu": True} if spec.activation == "quick_gelu" else {"quick_gelu": False}
    kind = sniff_weights(Path(weights)) if weights and Path(weights).is_file() else None
    if kind in ("torchscript", "openai_state_dict"):
        model = open_clip.create_model(spec.arch, pretrained=None, precision="fp32", device="cpu", **quick)
        state = _openai_state_dict(weights, kind)
        transient = {n for n, _ in model.named_buffers()} - set(model.state_dict())   # e.g. attn_mask
        try:
            model.load_state_dict({k: v for k, v in state.items() if k not in transient}, strict=True)
        except RuntimeError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            raise BenchError(f"cannot load weights {weights} into {spec.arch}: {lines[1] if len(lines) > 1 else lines[0]}"
                             ) from err
        return model
    return open_clip.create_model(spec.arch, pretrained=weights, precision="fp32", device="cpu", **quick)


def built_activation(model) -> str:
    """What the built model's MLPs actually use (timm image towers keep GELU whatever the flag says)."""
    kinds = {type(m) for m in model.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}
    return "quick_gelu" if QuickGELU in kinds else "gelu"


@functools.lru_cache(maxsize=4)
def _load(spec: BackboneSpec) -> Backbone:
    _register(spec)
    weights = _weights(spec)
    logging.disable(logging.ERROR)          # open_clip logs its own multi-line errors; ours is one line
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)            # random weights (tests, speed runs) are the same in every process
            model = _build(spec, weights)
    except BenchError:
        raise
    except Exception as err:  # noqa: BLE001  (a weights file can fail to load in many ways: one line for each)
        if weights and not Path(weights).is_file() and not spec.arch.startswith("local-dir:"):
            raise BenchError(f"cannot fetch pretrained weights '{weights}' for {spec.arch} (offline or hub "
                             "unreachable); download them once, then pass --pretrained /path/to/weights.pt") from err
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
        detail = next((ln for ln in lines if not ln.endswith(":")), lines[0])
        raise BenchError(f"cannot load {weights or spec.arch} into {spec.arch}: {type(err).__name__}: "
                         f"{detail[:200]}{'…' if len(detail) > 200 else ''}") from err
    finally:
        logging.disable(logging.NOTSET)
    if built_activation(model) != spec.activation:
        raise BenchError(f"{spec.arch} could not be built with {spec.activation} (open_clip built "
                         f"{built_activation(model)})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.autocast_linear_params = ("text_projection",)        # used as `x @ text_projection` (bench.precision)
    model.visual.autocast_linear_params = ("proj",)            # `pooled @ proj`
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return Backbone(spec, model, open_clip.get_tokenizer(spec.arch), int(size), mean, std, weights)


def _planned(spec: BackboneSpec) -> BackboneSpec:
    """The cache key: a planned backbone (its activation decided), whoever asks for it."""
    return replace(spec, explicit=True, reason="", notice=None)


def load_backbone(name: str, pretrained: str | None = None, activation: str | None = None,
                  arch_config: dict | None = None) -> Backbone:
    """Build (once per process) the backbone; callers take `fresh_model()` copies to mutate."""
    spec = check_backbone(name, pretrained, activation, arch_config)
    return _load(_planned(spec))


def load_cell_backbone(config: dict) -> Backbone:
    """The backbone a planned cell names (architecture config and activation come with the cell)."""
    return _load(_planned(spec_from_cell(config)))


# ---- text-tower internals (open_clip CLIP with a built-in text tower) ----

def token_embeddings(model, tokens: torch.Tensor) -> torch.Tensor:
    """(n, L) token ids → (n, L, width) embeddings, before positional embeddings."""
    return model.token_embedding(tokens)


def text_length(model, tokens: torch.Tensor) -> int:
    """How many leading positions the text tower must see: up to the last end-of-text token of the batch, rounded
    up to a multiple of 8. Exact under the causal mask (no position after a prompt's EOT can change its feature);
    a tower without a causal mask or with another pooling keeps the full context."""
    full = tokens.shape[1]
    pool = getattr(model, "text_pool_type", None)
    if getattr(model, "attn_mask", None) is None or pool not in ("argmax", "eos") or tokens.numel() == 0:
        return full
    eot = tokens.argmax(-1) if pool == "argmax" else (tokens == model.text_eos_id).int().argmax(-1)
    return min(full, -(-(int(eot.max()) + 1) // 8) * 8)


def truncate_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    """(n, context) token ids → (n, L) with L = text_length (see there)."""
    return tokens[:, :text_length(model, tokens)]


def encode_text(model, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text` for token ids of any length up to the context (see truncate_tokens)."""
    return encode_text_embeddings(model, token_embeddings(model, tokens), tokens)


def encode_text_embeddings(model, embeddings: torch.Tensor, tokens: torch.Tensor,
                           hook: LayerHook | None = None) -> torch.Tensor:
    """The text tower from the embedding stage on: what `model.encode_text` does after its token lookup, for
    sequences of L ≤ context positions (positional embedding and causal mask cut to L).

    embeddings: (n, L, width); tokens: (n, L) ids used only to find the end-of-text position; hook: called before
    each residual block (see `run_blocks`; deep prompts replace token slices, so the end-of-text position and the
    truncation stay exact).
    Returns (n, embed_dim) un-normalised text features.
    """
    # open_clip reads the residual stream's dtype off a weight; a training loop that holds the frozen weights in the
    # autocast dtype (bench.precision) pins the dtype they had, so the stream stays what it was (fp32 under autocast)
    cast_dtype = getattr(model.transformer, "pinned_cast_dtype", None) or model.transformer.get_cast_dtype()
    length = embeddings.shape[1]
    x = embeddings.to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    x = run_blocks(model.transformer, x, mask, hook)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


# ---- deep prompts: per-block token replacement in either tower ----

LayerHook = Callable[[int, torch.Tensor], torch.Tensor]   # (block index, x (N, L, width)) → x before that block


def run_blocks(transformer, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
               hook: LayerHook | None = None) -> torch.Tensor:
    """open_clip's `Transformer.forward` on x (N, L, width), with `hook(i, x)` applied before block i.

    The hook always sees batch-first (N, L, width) whatever `transformer.batch_first` is, and the blocks are called
    as open_clip calls them (`block(x, attn_mask=...)`), so it works for ResidualAttentionBlock (nn.MultiheadAttention)
    and CustomResidualAttentionBlock (open_clip's own Attention) alike. Without a hook it is `transformer(x)`.
    """
    if hook is None:
        return transformer(x, attn_mask=attn_mask)
    batch_first = getattr(transformer, "batch_first", True)
    for i, block in enumerate(transformer.resblocks):
        x = hook(i, x)
        if batch_first:
            x = block(x, attn_mask=attn_mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
    return x


def replace_tokens(x: torch.Tensor, tokens: torch.Tensor, start: int) -> torch.Tensor:
    """x (N, L, width) with P positions from `start` (negative: counted from the end) replaced by `tokens`, (P, width)
    shared by every sequence or (N, P, width)."""
    n, length = x.shape[:2]
    p = tokens.shape[-2]
    start = start + length if start < 0 else start
    if start < 0 or start + p > length:
        raise ValueError(f"cannot replace {p} tokens at position {start} of a sequence of {length}")
    tokens = tokens.to(x.dtype)
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0).expand(n, -1, -1)
    return torch.cat([x[:, :start], tokens, x[:, start + p:]], dim=1)


def prompt_hook(per_block: dict[int, torch.Tensor], start: int) -> LayerHook:
    """A hook that, before block i in `per_block`, replaces the prompt positions (from `start`) by per_block[i]:
    deep prompts as VPT, MaPLe and PromptSRC insert them (the tokens the previous block produced there are dropped)."""
    def hook(i: int, x: torch.Tensor) -> torch.Tensor:
        return replace_tokens(x, per_block[i], start) if i in per_block else x
    return hook


def encode_image_prompted(model, images: torch.Tensor, prompts: torch.Tensor | None = None,
                          hook: LayerHook | None = None) -> torch.Tensor:
    """`model.encode_image` (un-normalised) with `prompts` (P, width) or (N, P, width) appended after the patch tokens
    once the positional embedding is added (before ln_pre; they get no positional embedding), as VPT, MaPLe and
    PromptSRC do, and `hook` before each block (deep prompts replace the last P positions: start = -P). The prompt
    positions are dropped before pooling (the class token is what open_clip's ViT pools)."""
    v = model.visual
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "_pool")
    if not all(hasattr(v, a) for a in needed):
        raise BenchError(f"visual prompts need open_clip's VisionTransformer image tower, not {type(v).__name__}")
    x = v.conv1(images)                                                           # (N, width, g, g)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)                    # (N, g², width)
    cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
    x = v.patch_dropout(x)
    n_prompts = 0
    if prompts is not None:
        p = prompts if prompts.dim() == 3 else prompts.unsqueeze(0).expand(x.shape[0], -1, -1)
        x = torch.cat([x, p.to(x.dtype)], dim=1)
        n_prompts = p.shape[1]
    x = v.ln_pre(x)
    x = run_blocks(v.transformer, x, None, hook)
    if n_prompts:
        x = x[:, :-n_prompts]
    pooled, _ = v._pool(x)
    return pooled @ v.proj if v.proj is not None else pooled


def text_blocks(model) -> list:
    return list(model.transformer.resblocks)


def vision_blocks(model) -> list:
    return list(model.visual.transformer.resblocks)


def model_config(name: str) -> dict:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise did_you_mean("backbone", name, open_clip.list_models())
    return json.loads(json.dumps(cfg))
