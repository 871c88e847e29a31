"""Second-wave methods: the deep-prompt hook, each method's official semantics (CoCoOp's per-image prompts, KgCoOp's
penalty, MaPLe's coupling, PromptSRC's constraints and Gaussian aggregation, Tip-Adapter's cache and search, the
selective-tuning presets), their regularisers' value at step 0 and weight from the card, and bit-identical resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import Transformer

from bench import cards
from bench.backbone import (
    encode_image_prompted,
    encode_text,
    encode_text_embeddings,
    prompt_hook,
    replace_tokens,
    run_blocks,
    token_embeddings,
)
from bench.config import TrainConfig, resolve
from bench.data.splits import read_splits
from bench.methods import build_method
from bench.methods.base import FitData
from bench.trainer import train

NAMES = ["red square", "green square", "blue square", "yellow square", "purple square"]
CPU = torch.device("cpu")


def make(name, backbone, classnames=NAMES, dataset="toy", protocol="fewshot", **overrides):
    params, _ = resolve(name, dataset, protocol, 2)
    params.update(overrides)
    return build_method(name, backbone, classnames, "a photo of a {}.", params, dataset=dataset)


def cfg(**kw):
    base = dict(optimizer="sgd", lr=0.5, epochs=3, batch_size=5, schedule="constant", weight_decay=0.0,
                rrc_scale=(0.9, 1.0), iters_per_shot=None)
    return TrainConfig(**{**base, **kw})


def toy_items(toy):
    return read_splits(cards.dataset_card("toy"), toy)


# ---- the backbone door: deep prompts ----

@pytest.mark.parametrize("block_type,batch_first", [("default", True), ("default", False), ("custom", True)])
def test_run_blocks_matches_open_clip_for_both_attention_modules_and_layouts(block_type, batch_first):
    torch.manual_seed(0)
    tr = Transformer(16, 3, 2, block_type=block_type, batch_first=batch_first).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.triu(torch.full((5, 5), float("-inf")), 1)
    ref = tr(x, attn_mask=mask)                                  # open_clip's forward takes (N, L, D) either way
    seen = []
    out = run_blocks(tr, x, mask, lambda i, t: seen.append((i, t.shape)) or t)
    assert torch.allclose(out, ref, atol=1e-6)
    assert seen == [(i, (2, 5, 16)) for i in range(3)]                        # batch-first for the hook, each block


def test_identity_hooks_reproduce_open_clip_encoders(tiny_backbone):
    m = tiny_backbone.model
    x = torch.randn(2, 3, 32, 32)
    tokens = tiny_backbone.tokenize(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        assert torch.equal(encode_image_prompted(m, x, None, lambda i, t: t), m.encode_image(x))
        same = encode_text_embeddings(m, token_embeddings(m, tokens), tokens, lambda i, t: t)
        assert torch.equal(same, m.encode_text(tokens))


def test_replace_tokens_swaps_exactly_the_prompt_positions():
    x = torch.arange(2 * 6 * 3, dtype=torch.float).view(2, 6, 3)
    p = torch.full((2, 3), -1.0)
    front, back = replace_tokens(x, p, 1), replace_tokens(x, p, -2)
    assert torch.equal(front[:, 1:3], p.expand(2, -1, -1)) and torch.equal(front[:, [0, 3, 4, 5]], x[:, [0, 3, 4, 5]])
    assert torch.equal(back[:, 4:], p.expand(2, -1, -1)) and torch.equal(back[:, :4], x[:, :4])
    with pytest.raises(ValueError):
        replace_tokens(x, torch.zeros(3, 3), 4)


def test_deep_text_prompts_leave_positions_after_the_prompt_to_the_causal_mask(tiny_backbone):
    """Replacing positions 1..P before a block changes every later position's feature but none before it, and
    truncated prompts give the full-context features."""
    m = tiny_backbone.model
    tokens = tiny_backbone.tokenize(["a photo of a red square.", "a photo of a cat."])
    emb = token_embeddings(m, tokens)
    hook = prompt_hook({1: torch.randn(2, emb.shape[-1])}, 1)
    with torch.no_grad():
        full = encode_text_embeddings(m, emb, tokens, hook)
        cut = encode_text_embeddings(m, emb[:, :16], tokens[:, :16], hook)
        plain = encode_text_embeddings(m, emb, tokens)
    assert torch.allclose(full, cut, atol=1e-5) and not torch.allclose(full, plain, atol=1e-4)


# ---- CoCoOp ----

def test_cocoop_batched_prompts_equal_one_image_at_a_time(tiny_backbone):
    torch.manual_seed(0)
    m = make("cocoop", tiny_backbone)
    with torch.no_grad():
        m.meta_net.linear2.bias.normal_(0, 0.5)
    feats = torch.randn(4, tiny_backbone.model.visual.output_dim)
    m.eval()
    with torch.no_grad():
        batched = m.logits_from_features(feats)
        single = torch.cat([m.logits_from_features(feats[i:i + 1]) for i in range(4)])
        m2 = make("cocoop", tiny_backbone, text_batch=1)                    # one image per text-tower call
        m2.load_state_dict(m.state_dict())
        m2.eval()
        chunked = m2.logits_from_features(feats)
    assert torch.allclose(batched, single, atol=1e-5) and torch.allclose(batched, chunked, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])                        # every image has its own prompts


@pytest.mark.parametrize("name", ["cocoop", "maple", "promptsrc"])
def test_per_image_and_deep_prompt_logits_are_exact_under_truncation(name, tiny_backbone):
    def logits(truncate):
        params, _ = resolve(name, "toy", "fewshot", 2)
        torch.manual_seed(0)
        m = build_method(name, tiny_backbone, NAMES, "a photo of a {}.", params, dataset="toy", truncate_text=truncate)
        m.eval()
        torch.manual_seed(1)
        with torch.no_grad():
            return m(torch.randn(3, 3, 32, 32)).logits, m.class_tokens.shape[1]

    (cut, n_cut), (full, n_full) = logits(True), logits(False)
    assert n_cut < n_full and torch.allclose(cut, full, atol=1e-4)


def test_cocoop_with_a_zero_meta_net_is_coop_from_words(tiny_backbone):
    m = make("cocoop", tiny_backbone)
    coop = make("coop", tiny_backbone, ctx_init="a photo of a")
    with torch.no_grad():
        m.meta_net.linear2.weight.zero_()
        m.meta_net.linear2.bias.zero_()
    m.eval()
    coop.eval()
    feats = torch.randn(3, tiny_backbone.model.visual.output_dim)
    with torch.no_grad():
        assert torch.allclose(m.logits_from_features(feats), coop.logits_from_features(feats), atol=1e-4)
    assert [n for n in m.trainable_parameters()] == ["ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                                     "meta_net.linear2.weight", "meta_net.linear2.bias"]


# ---- KgCoOp ----

def test_kgcoop_penalty_is_zero_at_step_0_and_weighted_by_the_card(tiny_backbone):
    m = make("kgcoop", tiny_backbone)                    # context "a photo of a" = the toy template: t = t_clip
    m.train()
    out = m(torch.randn(2, 3, 32, 32))
    loss, parts = m.loss(out, torch.tensor([0, 1]))
    assert abs(float(parts["kg"])) < 1e-6
    assert m.p.w == cards.method_card("kgcoop").params["w"] == 8.0
    assert make("kgcoop", tiny_backbone, dataset="dtd").template == "a photo of a {}, a type of texture."
    with torch.no_grad():
        m.ctx.add_(torch.randn_like(m.ctx))
    out = m(torch.randn(2, 3, 32, 32))
    loss, parts = m.loss(out, torch.tensor([0, 1]))
    learned = F.normalize(m.compute_text_features(), dim=-1).detach()
    hand = F.normalize(encode_text(m.clip, m.tokenize([f"a photo of a {n}." for n in NAMES])), dim=-1)
    expected = 1 - F.cosine_similarity(learned, hand, dim=-1, eps=1e-7).mean().detach()
    assert float(parts["kg"]) == pytest.approx(float(expected), abs=1e-5) and float(parts["kg"]) > 1e-4
    assert float(loss.detach()) == pytest.approx(float(parts["ce"]) + 8.0 * float(parts["kg"]), rel=1e-5)


# ---- MaPLe ----

def test_maple_couples_vision_prompts_to_text_prompts(tiny_backbone):
    m = make("maple", tiny_backbone)
    assert m.depth == 2 and m.n_ctx == 2 and m.prefix_text == "a photo of a"          # 2-block towers cap depth 9
    words = tiny_backbone.tokenize(["a photo of a red square."])[0]
    assert torch.equal(m.class_tokens[0, :8], words[:8])                  # "of a" stays in the prompt, frozen
    assert all(torch.equal(p.weight, m.deep_proj[0].weight) for p in m.deep_proj)     # clones of one init
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = m.image_features(x)
        m.deep_text[0].add_(1.0)                                          # a text prompt moves the image features
        after = m.image_features(x)
    assert not torch.allclose(before, after)


# ---- PromptSRC ----

def test_promptsrc_constraints_at_step_0_and_weights_from_the_card(tiny_backbone):
    from bench.methods.templates import IMAGENET_TEMPLATES

    torch.manual_seed(0)
    m = make("promptsrc", tiny_backbone)
    card = cards.method_card("promptsrc").params
    assert (m.p.text_loss_weight, m.p.image_loss_weight) == (card["text_loss_weight"], card["image_loss_weight"]) \
        == (25.0, 10.0)
    assert len(IMAGENET_TEMPLATES) == 60
    m.train()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    out = m(x)
    logits = out.logits
    loss, parts = m.loss(out, y)
    model = tiny_backbone.model
    with torch.no_grad():
        t0 = torch.stack([encode_text(model, tiny_backbone.tokenize([t.format(n) for n in NAMES]))
                          for t in IMAGENET_TEMPLATES]).mean(0)
        t0, f0 = F.normalize(t0, dim=-1), F.normalize(model.encode_image(x), dim=-1)
        t, f = F.normalize(m.compute_text_features(), dim=-1), F.normalize(m.image_features(x), dim=-1)
        p0 = (model.logit_scale.exp() * f0 @ t0.t()).softmax(-1)
        kl = (p0 * (p0.log() - logits.log_softmax(-1))).sum() / logits.numel()
    assert float(parts["l1_text"]) == pytest.approx(float((t - t0).abs().mean()), rel=1e-4)
    assert float(parts["l1_image"]) == pytest.approx(float((f - f0).abs().mean()), rel=1e-4)
    assert float(parts["kl"]) == pytest.approx(float(kl), rel=1e-4, abs=1e-7)
    expected = parts["ce"] + 25.0 * parts["l1_text"] + 10.0 * parts["l1_image"] + parts["kl"]
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_gpa_weights_are_promptsrcs_gaussian_and_scale_with_the_budget():
    from bench.methods.promptsrc import gpa_weights

    w = gpa_weights(20, 15.0, 1.0, 20)
    g = np.array([math.exp(-0.5 * ((a - 15) / 1) ** 2) / math.sqrt(2 * math.pi) for a in range(1, 21)])
    assert np.allclose(w, g / g.sum()) and sum(w) == pytest.approx(1.0) and int(np.argmax(w)) == 14
    assert int(np.argmax(gpa_weights(4, 15.0, 1.0, 20))) == 2               # the mini budget keeps μ at 3/4
    flat = gpa_weights(50, 30.0, 30.0, 50)
    assert min(flat) > 0.5 * max(flat)                                        # few-shot: σ 30 is nearly uniform


def test_promptsrc_final_model_is_the_gaussian_aggregate_of_epochs(toy, tiny_backbone):
    from bench.methods.promptsrc import PromptSRC, gpa_weights

    m = make("promptsrc", tiny_backbone, gpa_mean=2.0, gpa_std=1.0, gpa_epochs=3)
    snapshots = []
    original = PromptSRC.on_epoch_end

    def record(self, epoch, total):
        snapshots.append({n: p.detach().clone() for n, p in self.trainable_parameters().items()})
        original(self, epoch, total)

    PromptSRC.on_epoch_end = record
    try:
        train(m, toy_items(toy).train[:10], cfg(epochs=3), shots=2, seed=1, device=CPU)
    finally:
        PromptSRC.on_epoch_end = original
    weights = gpa_weights(3, 2.0, 1.0, 3)
    for n, p in m.trainable_parameters().items():
        expected = sum(w * s[n] for w, s in zip(weights, snapshots))
        assert torch.allclose(p, expected, atol=1e-6), n
        assert not torch.allclose(p, snapshots[-1][n])                       # not simply the last epoch


# ---- Tip-Adapter ----

def fit_data(method, items, val, **kw):
    from bench.evaluator import EvalOptions, image_features

    return FitData(items, val, val, cfg(batch_size=4, **kw), CPU, 1,
                   features=lambda its: image_features(method, its, CPU, EvalOptions(fast=False)))


def test_tip_adapter_cache_is_normalised_mean_of_augmented_views_with_one_hot_values(toy, tiny_backbone):
    splits = toy_items(toy)
    items = splits.train[:10]
    m = make("tip_adapter", tiny_backbone, augment_views=3)
    m.before_training(fit_data(m, items, splits.val))
    assert m.cache_keys.shape == (10, tiny_backbone.model.visual.output_dim)
    assert torch.allclose(m.cache_keys.norm(dim=-1), torch.ones(10), atol=1e-5)
    assert torch.equal(m.cache_values.argmax(-1), torch.tensor([it.label for it in items]))
    again = make("tip_adapter", tiny_backbone, augment_views=3)
    again.before_training(fit_data(again, items, splits.val))
    assert torch.equal(again.cache_keys, m.cache_keys)                        # seeded views: deterministic
    assert m.count_trainable() == 0 and not m.trains


def test_tip_adapter_search_is_the_official_grid_search(tiny_backbone):
    torch.manual_seed(0)
    m = make("tip_adapter", tiny_backbone, search_step=[12, 5], search_scale=[7.0, 3.0])
    dim = tiny_backbone.model.visual.output_dim
    m.cache_keys = F.normalize(torch.randn(10, dim), dim=-1)
    m.cache_values = F.one_hot(torch.arange(10) % 5, 5).float()
    feats, labels = F.normalize(torch.randn(40, dim), dim=-1), torch.randint(0, 5, (40,))
    m.eval()
    with torch.no_grad():
        w = m.text_features()
        best, best_beta, best_alpha = 0.0, 0.0, 0.0                          # main.py / utils.py search_hp, literally
        for beta in [i * (7.0 - 0.1) / 12 + 0.1 for i in range(12)]:
            for alpha in [i * (3.0 - 0.1) / 5 + 0.1 for i in range(5)]:
                affinity = feats @ m.cache_keys.t()
                cache = ((-1) * (beta - beta * affinity)).exp() @ m.cache_values
                tip = m.clip.logit_scale.exp() * feats @ w.t() + cache * alpha
                acc = 100 * float((tip.argmax(-1) == labels).float().mean())
                if acc > best:
                    best, best_beta, best_alpha = acc, beta, alpha
        assert m.search(feats, labels) == (best_beta, best_alpha)


def test_tip_adapter_f_trains_only_the_keys_and_searches_after(toy, tiny_backbone):
    splits = toy_items(toy)
    items = splits.train[:10]
    m = make("tip_adapter_f", tiny_backbone, augment_views=2, search_step=[20, 10])
    assert m.count_trainable() == 0 and m.optimizer_options() == {"eps": 1e-4}
    data = fit_data(m, items, splits.val, optimizer="adamw", lr=0.05)
    m.before_training(data)
    assert m.count_trainable() == 10 * tiny_backbone.model.visual.output_dim     # N·K × D
    keys, frozen = m.cache_keys.detach().clone(), {n: p.clone() for n, p in m.clip.named_parameters()}
    stats = train(m, items, data.cfg, shots=2, seed=1, device=CPU)
    assert stats.last_loss < stats.first_loss and not torch.equal(m.cache_keys, keys)
    assert all(torch.equal(p, frozen[n]) for n, p in m.clip.named_parameters())
    m.after_training(data)                                                   # the search on validation
    labels = torch.tensor([it.label for it in splits.val])
    assert (float(m.beta), float(m.alpha)) == pytest.approx(m.search(data.features(splits.val), labels))
    assert not m.can_classify(["cyan square"]) and m.can_classify(NAMES[1:3])


def test_tip_adapter_classifies_a_subset_of_its_classes_with_their_cache_columns(tiny_backbone):
    m = make("tip_adapter", tiny_backbone)
    dim = tiny_backbone.model.visual.output_dim
    m.cache_keys = F.normalize(torch.randn(10, dim), dim=-1)
    m.cache_values = F.one_hot(torch.arange(10) % 5, 5).float()
    m.eval()
    feats = torch.randn(3, dim)
    with torch.no_grad():
        full = m.logits_from_features(feats)
        m.retarget(NAMES[3:], "toy", "a photo of a {}.")
        sub = m.logits_from_features(feats)
    assert torch.allclose(sub, full[:, 3:], atol=1e-4)


# ---- selective tuning presets and BitFit ----

def test_selective_presets_pick_their_tensor_sets(tiny_backbone):
    def trainable(name):
        return set(make(name, tiny_backbone).trainable_parameters())

    bitfit = trainable("bitfit")
    assert bitfit and all(n.endswith("bias") for n in bitfit)
    assert "clip.ln_final.bias" in bitfit and "clip.visual.ln_pre.bias" in bitfit            # LayerNorm β too
    assert "clip.transformer.resblocks.0.attn.in_proj_bias" in bitfit
    assert trainable("clipfit_text_only") == {n for n in trainable("clipfit") if not n.startswith("clip.visual.")}
    assert trainable("clipfit_image_only") == {n for n in trainable("clipfit") if n.startswith("clip.visual.")}
    assert trainable("selective") == trainable("clipfit")
    assert trainable("clipfit_all_bias") == bitfit
    assert make("clipfit_text_only", tiny_backbone).frozen_image_tower
    assert make("clipfit_image_only", tiny_backbone).frozen_text_tower
    assert make("bitfit", tiny_backbone).p.lam == 0.0


def test_preset_cards_extend_clipfits_recipe():
    for preset in ("clipfit_text_only", "clipfit_image_bias", "selective"):
        card = cards.method_card(preset)
        assert card.extends == "clipfit" and card.paper == cards.method_card("clipfit").paper
        p, t = resolve(preset, "dtd", "base2new", 16)
        assert (p["lam"], t.epochs, t.lr) == (8.0, 100, 0.002)                # ClipFit's overrides carry over
        assert resolve(preset, "imagenet", "fewshot", 16)[1].epochs == 10


# ---- resume (every new method that trains) ----

@pytest.mark.parametrize("name", ["cocoop", "kgcoop", "maple", "promptsrc", "bitfit", "tip_adapter_f"])
def test_resume_from_checkpoint_is_bit_identical(name, toy, tiny_backbone, tmp_path):
    splits = toy_items(toy)
    items = splits.train[:15]
    opt = {"optimizer": "adamw", "lr": 0.01} if name == "tip_adapter_f" else {"lr": 0.1}
    config = cfg(epochs=4, batch_size=4, schedule="dassl_cosine", **opt)

    def build(seed):
        torch.manual_seed(seed)
        m = make(name, tiny_backbone, **({"augment_views": 2} if name.startswith("tip") else {}))
        if name.startswith("tip"):
            m.before_training(fit_data(m, items, splits.val))
        return m

    full = build(0)
    train(full, items, config, shots=3, seed=7, device=CPU)
    first = build(0)
    train(first, items, config, shots=3, seed=7, device=CPU, ckpt_dir=tmp_path, stop_after_epoch=2)
    resumed = build(0)
    torch.manual_seed(123)                                    # a new process would not share RNG state
    stats = train(resumed, items, config, shots=3, seed=7, device=CPU, ckpt_dir=tmp_path)
    assert stats.resumed_from_epoch == 2
    for n, v in full.trainable_state().items():
        assert torch.equal(v, resumed.trainable_state()[n]), n
