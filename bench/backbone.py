"""The one door to open_clip: build a CLIP (random, hub tag, local file or the mini world) and its tokenizer.

Usage:
    >>> from bench.backbone import load_backbone
    >>> bb = load_backbone("ViT-B-16", "openai")            # hub tag (needs network or a warm cache)
    >>> bb = load_backbone("ViT-B-16", "/ckpt/vitb16.pt")   # local file (.pt/.bin/.safetensors)
    >>> bb = load_backbone("bench-tiny", None)               # random weights, for tests
    >>> feats = bb.model.encode_image(images)

Only this module imports open_clip. It also owns the text-tower internals that prompt learning needs
(token embeddings in, class features out).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import text_global_pool

from bench.errors import BenchError, did_you_mean

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)

RANDOM = (None, "", "none", "random")


@dataclass
class Backbone:
    name: str
    pretrained: str | None
    model: Any                 # open_clip.CLIP, eval mode, fp32
    tokenizer: Any
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str | None = None     # the resolved tag or file actually loaded

    @property
    def id(self) -> str:
        """A stable identity for caches: the tag, or a local file's path, size and mtime."""
        if self.weights and Path(self.weights).is_file():
            st = Path(self.weights).stat()
            return f"{self.name}:{self.weights}:{st.st_size}:{st.st_mtime_ns}"
        return f"{self.name}:{self.weights or 'random'}"

    def fresh_model(self):
        """A deep copy of the pristine model: each cell mutates its own."""
        return copy.deepcopy(self.model)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)


def list_backbones() -> list[str]:
    """open_clip's architectures plus bench's own, read from JSON files (no torch import needed)."""
    spec = importlib.util.find_spec("open_clip")
    names = set()
    if spec and spec.origin:
        names |= {p.stem for p in (Path(spec.origin).parent / "model_configs").glob("*.json")}
    names |= {p.stem for p in CONFIG_DIR.glob("*.json")}
    return sorted(names)


def _resolve_pretrained(name: str, pretrained: str | None) -> str | None:
    if pretrained in RANDOM:
        return None
    if pretrained == "mini-world":
        from bench.mini.world import ensure_world

        return str(ensure_world().checkpoint)
    path = Path(pretrained).expanduser()
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in pretrained:
        if not path.is_file():
            raise BenchError(f"pretrained weights file {path} does not exist (--pretrained takes an open_clip tag "
                             "or a local .pt/.bin/.safetensors file)")
        return str(path)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise did_you_mean(f"pretrained tag for {name}", pretrained, tags or ["<none: pass a local file>"])
    return pretrained


def check_backbone(name: str, pretrained: str | None) -> str | None:
    """Validate the architecture and the tag/file without loading weights; returns the resolved weights."""
    if name not in open_clip.list_models():
        raise did_you_mean("backbone", name, open_clip.list_models())
    return _resolve_pretrained(name, pretrained)


@functools.lru_cache(maxsize=4)
def _load(name: str, pretrained: str | None) -> Backbone:
    weights = check_backbone(name, pretrained)
    logging.disable(logging.ERROR)          # open_clip logs its own multi-line errors; ours is one line
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)            # random weights (tests, speed runs) are the same in every process
            model = open_clip.create_model(name, pretrained=weights, precision="fp32", device="cpu")
    except RuntimeError as err:
        if weights and not Path(weights).is_file():
            raise BenchError(f"cannot fetch pretrained weights '{pretrained}' for {name} (offline or hub "
                             "unreachable); download them once, then pass --pretrained /path/to/weights.pt") from None
        raise BenchError(f"cannot load weights {weights} into {name}: {str(err).splitlines()[0]}") from None
    finally:
        logging.disable(logging.NOTSET)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return Backbone(name, pretrained, model, open_clip.get_tokenizer(name), int(size), mean, std, weights)


def load_backbone(name: str, pretrained: str | None) -> Backbone:
    """Build (once per process) the backbone; callers take `fresh_model()` copies to mutate."""
    return _load(name, pretrained)


# ---- text-tower internals (open_clip CLIP with a built-in text tower) ----

def token_embeddings(model, tokens: torch.Tensor) -> torch.Tensor:
    """(n, L) token ids → (n, L, width) embeddings, before positional embeddings."""
    return model.token_embedding(tokens)


def encode_text_embeddings(model, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower from the embedding stage on: what `model.encode_text` does after its token lookup.

    embeddings: (n, L, width); tokens: (n, L) ids used only to find the end-of-text position.
    Returns (n, embed_dim) un-normalised text features.
    """
    cast_dtype = model.transformer.get_cast_dtype()
    x = embeddings.to(cast_dtype) + model.positional_embedding.to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def text_blocks(model) -> list:
    return list(model.transformer.resblocks)


def vision_blocks(model) -> list:
    return list(model.visual.transformer.resblocks)


def model_config(name: str) -> dict:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise did_you_mean("backbone", name, open_clip.list_models())
    return json.loads(json.dumps(cfg))
