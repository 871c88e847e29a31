"""Methods: exact trainable sets on ViT-B-16, training changes exactly the trainable tensors, method facts."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from bench import cards
from bench.config import TrainConfig, resolve
from bench.data.splits import read_splits
from bench.methods import build_method
from bench.trainer import train

NAMES = ["red square", "green square", "blue square", "yellow square", "purple square"]

# a learning rate per method so that a few steps on 10 images move the loss on a random tiny model
FAST = {"clipfit": ("sgd", 0.5), "coop": ("sgd", 0.5), "clip_adapter": ("sgd", 0.5), "lora": ("adamw", 0.02),
        "full_ft": ("adamw", 1e-3), "linear_probe": ("adamw", 0.05), "cocoop": ("sgd", 0.5), "kgcoop": ("sgd", 0.5),
        "maple": ("sgd", 0.5), "promptsrc": ("sgd", 0.5), "bitfit": ("sgd", 0.5), "clipfit_text_only": ("sgd", 0.5),
        "clipfit_image_only": ("sgd", 0.5), "clipfit_all_bias": ("sgd", 0.5)}


def make(name, backbone, classnames=NAMES, dataset="toy", **overrides):
    params, _ = resolve(name, dataset, "fewshot", 2)
    params.update(overrides)
    return build_method(name, backbone, classnames, "a photo of a {}.", params, dataset=dataset)


def fast_cfg(name, **kw):
    opt, lr = FAST[name]
    base = dict(optimizer=opt, lr=lr, epochs=6, batch_size=10, schedule="constant", weight_decay=0.0,
                rrc_scale=(0.9, 1.0), iters_per_shot=None)
    return TrainConfig(**{**base, **kw})


# Each count derived from the official code's module shapes (see each card): CoCoOp 4·512 + 512·32 + 32 + 32·512 +
# 512; MaPLe 2·512 + (512·768 + 768) + 8·2·512 + 8·(512·768 + 768); PromptSRC 4·512 + 8·4·512 + 4·768 + 8·4·768.
@pytest.mark.parametrize("name,expected", [
    ("clipfit", 46_080), ("coop", 8_192), ("clip_adapter", 131_072), ("lora", 184_320), ("full_ft", 149_620_737),
    ("cocoop", 35_360), ("kgcoop", 2_048), ("maple", 3_555_072), ("promptsrc", 46_080), ("bitfit", 171_008),
    ("tip_adapter", 0)])
def test_trainable_counts_on_vit_b16(name, expected):
    from bench.backbone import load_backbone

    bb = load_backbone("ViT-B-16", None)
    assert make(name, bb, ["cat", "dog"]).count_trainable() == expected


COUNTED = [n for n in cards.method_names() if isinstance(cards.method_card(n).trainable, int)]


@pytest.mark.parametrize("name", COUNTED)
def test_card_trainable_counts_hold_on_vit_b16(name):
    """`bench ls methods` prints each card's count: it must be what the method builds on ViT-B/16."""
    from bench.backbone import load_backbone

    bb = load_backbone("ViT-B-16", None)
    assert make(name, bb, ["cat", "dog"]).count_trainable() == cards.method_card(name).trainable


def test_tip_adapter_f_trains_n_k_by_d_keys_on_vit_b16(toy):
    from bench.backbone import load_backbone
    from bench.methods.base import FitData

    bb = load_backbone("ViT-B-16", None)
    splits = read_splits(cards.dataset_card("toy"), toy)
    m = make("tip_adapter_f", bb, NAMES, augment_views=1)
    m.before_training(FitData(splits.train[:10], [], [], fast_cfg("lora"), torch.device("cpu"), 1))
    assert m.count_trainable() == 10 * 512


def test_coop_short_context_count():
    from bench.backbone import load_backbone

    bb = load_backbone("ViT-B-16", None)
    assert make("coop", bb, ["cat"], n_ctx=4).count_trainable() == 2_048
    assert make("coop", bb, ["cat"], ctx_init="a photo of a").count_trainable() == 2_048


def test_coop_prompt_longer_than_the_context_is_a_clear_error(tiny_backbone):
    from bench.errors import BenchError

    context = tiny_backbone.tokenize(["x"]).shape[1]
    make("coop", tiny_backbone, ["red circle"], n_ctx=context - 5)      # SOS + ctx + 2 name tokens + "." + EOS: fits
    with pytest.raises(BenchError, match="'red circle'.*does not fit"):
        make("coop", tiny_backbone, ["red circle"], n_ctx=context - 4)


def test_clipfit_selects_exactly_text_cproj_biases_and_visual_layernorms(tiny_backbone):
    m = make("clipfit", tiny_backbone)
    names = set(m.trainable_parameters())
    text = {n for n in names if not n.startswith("clip.visual.")}
    assert text == {f"clip.transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(2)}
    visual = {n for n in names if n.startswith("clip.visual.")}
    assert all(".ln_" in n for n in visual) and len(visual) == 2 * (2 + 2 * 2)   # ln_pre, ln_post, ln_1/ln_2 × 2


def test_every_registered_method_that_trains_is_in_the_training_test():
    """Derived from the registry, so a new method cannot be left out: each class that trains has a name in FAST."""
    from bench.methods import METHODS

    elsewhere = {"tip_adapter_f"}      # trains on the cache before_training builds: test_methods_wave2 (resume)
    covered = {METHODS.get(n) for n in FAST}
    missing = [n for n in METHODS.names() if METHODS.get(n).trains and METHODS.get(n) not in covered
               and n not in elsewhere]
    assert missing == [], f"add {missing} to FAST (an optimizer and a learning rate that move a tiny model)"


@pytest.mark.parametrize("name", list(FAST))
def test_training_lowers_loss_and_touches_only_trainable_tensors(name, toy, tiny_backbone):
    torch.manual_seed(0)
    splits = read_splits(cards.dataset_card("toy"), toy)
    items = [it for it in splits.train if int(it.path[-7:-4]) < 2]              # 2 shots × 5 classes
    m = make(name, tiny_backbone)
    from bench.data.images import ImageSet, test_transform

    bb = tiny_backbone
    x, y = map(lambda t: torch.stack(t) if isinstance(t[0], torch.Tensor) else torch.tensor(t),
               zip(*ImageSet(items, test_transform(bb.image_size, bb.mean, bb.std))))
    m.eval()
    with torch.no_grad():
        before_loss = F.cross_entropy(m(x).logits, y).item()
    trainable = set(m.trainable_parameters())
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    train(m, items, fast_cfg(name), shots=2, seed=1, device=torch.device("cpu"))
    with torch.no_grad():
        after_loss = F.cross_entropy(m(x).logits, y).item()
    assert after_loss < before_loss
    for n, p in m.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{n} did not change"
        else:
            assert torch.equal(p, before[n]), f"frozen {n} changed"


def test_coop_init_from_words_equals_zeroshot_prompt(tiny_backbone):
    coop = make("coop", tiny_backbone, ctx_init="a photo of a")
    zs = make("zeroshot", tiny_backbone)
    coop.eval()
    zs.eval()
    with torch.no_grad():
        assert torch.allclose(coop.compute_text_features(), zs.compute_text_features(), atol=1e-5)


@pytest.mark.parametrize("position", ["middle", "front"])
def test_coop_class_token_positions_build_full_prompts(tiny_backbone, position):
    m = make("coop", tiny_backbone, n_ctx=4, class_token_position=position)
    prompts = m.prompts()
    assert prompts.shape == (5, m.class_tokens.shape[1], tiny_backbone.model.token_embedding.weight.shape[1])
    assert m.compute_text_features().shape == (5, 32)


def test_lora_with_zero_b_is_the_frozen_model_and_merge_agrees(tiny_backbone):
    x = torch.randn(3, 3, 32, 32)
    lora = make("lora", tiny_backbone, dropout=0.0)
    zs = make("zeroshot", tiny_backbone)
    lora.eval()
    zs.eval()
    with torch.no_grad():
        assert torch.allclose(lora(x).logits, zs(x).logits, atol=1e-4)
        for mod in lora.lora_modules().values():
            mod.lora_B.normal_(0, 0.5)
        lora.train()                                # unmerged path (dropout 0)
        unmerged = lora(x).logits
        lora.eval()                                 # merged path
        merged = lora(x).logits
    assert torch.allclose(merged, unmerged, atol=1e-4)
    assert not torch.allclose(merged, zs(x).logits, atol=1e-3)


def test_lora_handles_open_clip_attention_module():
    from open_clip.transformer import Attention

    from bench.methods.lora_layers import LoRAAttention

    torch.manual_seed(0)
    attn = Attention(16, num_heads=2).eval()
    wrapped = LoRAAttention(attn, ("q", "k", "v", "o"), r=2, alpha=1.0, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.triu(torch.full((5, 5), float("-inf")), 1)
    assert torch.allclose(wrapped(x, attn_mask=mask), attn(x, attn_mask=mask), atol=1e-5)


def test_clipfit_regulariser_is_zero_at_start_and_lambda_from_card(tiny_backbone):
    m = make("clipfit", tiny_backbone)
    m.train()
    out = m(torch.randn(2, 3, 32, 32))
    loss, parts = m.loss(out, torch.tensor([0, 1]))
    assert abs(parts["reg"]) < 1e-6
    assert m.p.lam == cards.method_card("clipfit").params["lam"] == 2.0
    assert make("clipfit", tiny_backbone, dataset="dtd").p.lam == 8.0           # the README's per-dataset λ
    m5 = make("clipfit", tiny_backbone, lam=5.0)
    m5.train()
    with torch.no_grad():
        m5.clip.transformer.resblocks[0].mlp.c_proj.bias.add_(torch.randn(32))   # (a constant shift is LN-invariant)
    out = m5(torch.randn(2, 3, 32, 32))
    loss, parts = m5.loss(out, torch.tensor([0, 1]))
    assert parts["reg"] > 1e-4
    assert loss.item() == pytest.approx(float(parts["ce"]) + 5.0 * float(parts["reg"]), rel=1e-5)


def test_base_to_new_evaluates_new_classes_with_the_tuned_model(toy, tiny_backbone):
    m = make("clipfit", tiny_backbone, classnames=NAMES[:3])
    splits = read_splits(cards.dataset_card("toy"), toy)
    train(m, splits.train[:10], fast_cfg("clipfit", epochs=2), shots=2, seed=1, device=torch.device("cpu"))
    tuned = m.trainable_state()
    m.retarget(NAMES[3:], "toy", "a photo of a {}.")
    assert m.classnames == NAMES[3:]
    for n, v in m.trainable_state().items():
        assert torch.equal(v, tuned[n])                     # the tuned biases/LNs carry over
    zs = make("zeroshot", tiny_backbone, classnames=NAMES[3:])
    x = torch.randn(2, 3, 32, 32)
    m.eval()
    zs.eval()
    assert not torch.allclose(m(x).logits, zs(x).logits)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resume_from_checkpoint_is_bit_identical(toy, tiny_backbone, tmp_path, precision):
    splits = read_splits(cards.dataset_card("toy"), toy)
    items = splits.train[:15]
    cfg = dataclasses.replace(fast_cfg("lora", epochs=4, schedule="cosine_iter"), batch_size=4, precision=precision)

    torch.manual_seed(0)
    full = make("lora", tiny_backbone)
    train(full, items, cfg, shots=3, seed=7, device=torch.device("cpu"))

    torch.manual_seed(0)
    first = make("lora", tiny_backbone)
    train(first, items, cfg, shots=3, seed=7, device=torch.device("cpu"), ckpt_dir=tmp_path, stop_after_epoch=2)
    torch.manual_seed(123)                                   # a new process would not share RNG state
    resumed = make("lora", tiny_backbone)
    stats = train(resumed, items, cfg, shots=3, seed=7, device=torch.device("cpu"), ckpt_dir=tmp_path)
    assert stats.resumed_from_epoch == 2
    for n, v in full.trainable_state().items():
        assert torch.equal(v, resumed.trainable_state()[n]), n
    if precision == "fp16":                                  # the loss scale travels with the checkpoint
        from safetensors import safe_open

        with safe_open(str(tmp_path / "state.safetensors"), framework="pt") as fh:
            meta = json.loads(fh.metadata()["bench"])["meta"]
        assert meta["grad_scaler"]["scale"] > 0 and "_growth_tracker" in meta["grad_scaler"]


def test_checkpoint_holds_only_trainable_tensors(toy, tiny_backbone, tmp_path):
    from safetensors.torch import load_file

    m = make("clipfit", tiny_backbone)
    splits = read_splits(cards.dataset_card("toy"), toy)
    train(m, splits.train[:10], fast_cfg("clipfit", epochs=1, ckpt_interval_s=0), shots=2, seed=1,
          device=torch.device("cpu"), ckpt_dir=tmp_path)
    saved = load_file(str(tmp_path / "state.safetensors"))
    params = {k for k in saved if k.startswith("param.")}
    assert params == {f"param.{n}" for n in m.trainable_parameters()}
    assert sum(v.numel() for k, v in saved.items() if k.startswith("param.")) == m.count_trainable()


def test_checkpoints_are_written_by_time_not_every_one_step_epoch(toy, tiny_backbone, tmp_path, monkeypatch):
    from bench import trainer

    writes = []
    monkeypatch.setattr(trainer, "save_state", lambda folder, *a, **k: writes.append(k))
    splits = read_splits(cards.dataset_card("toy"), toy)
    for interval, expected in ((3600, 0), (0, 4)):
        writes.clear()
        train(make("clipfit", tiny_backbone), splits.train[:10], fast_cfg("clipfit", epochs=4, ckpt_interval_s=interval),
              shots=2, seed=1, device=torch.device("cpu"), ckpt_dir=tmp_path / str(interval))
        assert len(writes) == expected, interval
    writes.clear()                                          # a run stopped on purpose always leaves its state
    train(make("clipfit", tiny_backbone), splits.train[:10], fast_cfg("clipfit", epochs=4, ckpt_interval_s=3600),
          shots=2, seed=1, device=torch.device("cpu"), ckpt_dir=tmp_path / "stop", stop_after_epoch=2)
    assert len(writes) == 1


def test_dassl_schedule():
    from bench.trainer import lr_at

    cfg = TrainConfig(lr=0.002, epochs=10, schedule="dassl_cosine")
    assert lr_at(cfg, 0, 0, 10, 100) == 1e-5
    assert lr_at(cfg, 1, 0, 10, 100) == pytest.approx(0.002)
    assert lr_at(cfg, 9, 0, 10, 100) == pytest.approx(0.002 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 8 / 10)))
    lora = TrainConfig(lr=2e-4, schedule="cosine_iter", min_lr=1e-6)
    assert lr_at(lora, 0, 0, 1, 500) == pytest.approx(2e-4)
    assert lr_at(lora, 0, 500, 1, 500) == pytest.approx(1e-6)


@pytest.mark.parametrize("name", ["clipfit", "kgcoop", "full_ft", "promptsrc"])
def test_the_loss_reads_only_what_forward_returned(name, tiny_backbone):
    """Nothing travels from forward to loss outside the Output: a loss computed after another forward (with moved
    weights and other images) equals the loss computed right after its own forward."""
    torch.manual_seed(0)
    m = make(name, tiny_backbone, **({"lam": 1.0} if name == "full_ft" else {}))
    m.train()
    x1, x2, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with torch.no_grad():
        alone = m.loss(m(x1), y)[1]
        out1 = m(x1)
        for prm in m.trainable_parameters().values():
            prm.add_(0.1 * torch.randn_like(prm))
        m(x2)
        later = m.loss(out1, y)[1]
    assert set(alone) == set(later) and len(alone) > 1
    assert all(torch.equal(alone[k], later[k]) for k in alone), name


def test_references_are_captured_once_from_the_untouched_model(tiny_backbone):
    m = make("clipfit", tiny_backbone)
    anchor = m.text_anchor.clone()
    zs = make("zeroshot", tiny_backbone)
    with torch.no_grad():
        assert torch.allclose(anchor, F.normalize(zs.compute_text_features(), dim=-1), atol=1e-6)
        m.clip.transformer.resblocks[0].mlp.c_proj.bias.add_(torch.randn(32))
    m.retarget(NAMES[3:], "toy2", "a photo of a {}.")          # new classes, then back: the anchor stays
    m.retarget(NAMES, "toy", "a photo of a {}.")
    assert torch.equal(m.text_anchor, anchor)
