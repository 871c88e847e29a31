"""Exact text truncation: encoding class prompts only up to the batch's last end-of-text token (rounded up to a
multiple of 8) gives the full-context features for every method that encodes text."""

from __future__ import annotations

import open_clip
import pytest
import torch

from bench.backbone import encode_text, load_backbone, text_length
from bench.config import resolve
from bench.methods import build_method

NAMES = ["red square", "green square with a long descriptive name", "blue square", "yellow square"]
CASES = [("zeroshot", {}), ("zeroshot", {"ensemble": True}), ("clipfit", {}), ("lora", {"dropout": 0.0}),
         ("coop", {"class_token_position": "end", "n_ctx": 4}), ("coop", {"class_token_position": "middle", "n_ctx": 4}),
         ("coop", {"class_token_position": "front", "n_ctx": 4}), ("coop", {"ctx_init": "a photo of a"}),
         ("full_ft", {}), ("cocoop", {}), ("kgcoop", {}), ("maple", {}), ("promptsrc", {}), ("tip_adapter", {}),
         ("bitfit", {}), ("clipfit_text_only", {})]


def features(name, params, bb, truncate):
    full, _ = resolve(name, "toy", "fewshot", 2)
    torch.manual_seed(0)
    m = build_method(name, bb, NAMES, "a photo of a {}.", {**full, **params}, dataset="toy", truncate_text=truncate)
    m.eval()
    with torch.no_grad():
        return m.compute_text_features(), m.class_tokens.shape[1]


@pytest.mark.parametrize("backbone", ["bench-tiny", pytest.param("ViT-B-16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in CASES])
def test_truncated_features_equal_full_context(backbone, name, params):
    bb = load_backbone(backbone, None)
    full, full_len = features(name, params, bb, truncate=False)
    cut, cut_len = features(name, params, bb, truncate=True)
    assert cut_len < full_len and cut_len % 8 == 0
    assert torch.allclose(cut, full, atol=1e-5, rtol=1e-5), (cut - full).abs().max()


def test_length_is_the_last_end_of_text_rounded_up_to_eight(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a b c", "a b c d e f g h i"])       # SOS + 9 words + EOT = 11 positions
    assert text_length(tiny_backbone.model, tokens) == 16


def test_a_tower_without_a_causal_mask_keeps_the_full_length():
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "head_width": 8,
                                           "patch_size": 8},
           "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1,
                        "no_causal_mask": True}}
    model = open_clip.CLIP(**cfg).eval()
    tokens = open_clip.tokenize(["a cat"], context_length=24)
    assert model.attn_mask is None and text_length(model, tokens) == 24
    with torch.no_grad():
        assert torch.allclose(encode_text(model, tokens), model.encode_text(tokens), atol=1e-6)
