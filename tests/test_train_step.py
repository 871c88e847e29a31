"""The training step: CUDA graphs fall back to eager steps where they cannot run (here: no CUDA device) and train
to the same tensors; frozen weights held in the autocast dtype leave the numbers and the fp32 tensors as they were."""

from __future__ import annotations

import math

import pytest
import torch

from bench.config import TrainConfig
from bench.methods import build_method
from bench.precision import autocast, frozen_weights_in
from bench.train_step import EagerStep, GraphedStep, make_step
from bench.trainer import make_optimizer

NAMES = ["red square", "green square", "blue square"]


def _trained(backbone, graphs: bool, steps: int = 4):
    torch.manual_seed(0)
    method = build_method("clipfit", backbone, NAMES, "a photo of a {}.", {})
    cfg = TrainConfig(lr=0.01, cuda_graphs=graphs)
    optimizer = make_optimizer(cfg, list(method.trainable_parameters().values()))
    step = make_step(method, optimizer, torch.amp.GradScaler("cpu", enabled=False), cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    method.train()
    for _ in range(steps):
        x = torch.randn(4, 3, backbone.image_size, backbone.image_size, generator=gen)
        loss, _ = step(x, torch.randint(0, 3, (4,), generator=gen))
        assert not loss.requires_grad                         # no autograd graph outlives a step
    return step, method.trainable_state()


def test_cuda_graphs_fall_back_to_eager_steps_without_cuda(tiny_backbone):
    graphed, a = _trained(tiny_backbone, graphs=True)
    eager, b = _trained(tiny_backbone, graphs=False)
    assert isinstance(graphed, GraphedStep) and "no CUDA device" in graphed.off and graphed.graph is None
    assert type(eager) is EagerStep
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["clipfit", "coop", "lora"])
def test_frozen_weights_in_the_autocast_dtype_train_to_the_same_tensors_and_come_back(name, tiny_backbone):
    """In training mode (where the trainer holds them) the held weights meet the same bf16 kernels autocast would
    have cast them for. (In eval mode under CPU autocast nn.MultiheadAttention takes its fused fast path only when
    its weights are fp32: another kernel, which is why the trainer holds them for the training loop alone.)"""
    cpu = torch.device("cpu")

    def run(hold: bool):
        torch.manual_seed(0)
        method = build_method(name, tiny_backbone, NAMES, "a photo of a {}.", {})
        weight = method.clip.visual.transformer.resblocks[0].mlp.c_fc.weight
        fp32 = weight.data_ptr()
        optimizer = make_optimizer(TrainConfig(lr=0.05), list(method.trainable_parameters().values()))
        gen = torch.Generator().manual_seed(1)
        method.train()
        with frozen_weights_in(method, torch.bfloat16 if hold else None) as n:
            assert (n > 0) == hold and (weight.dtype == torch.bfloat16) == hold
            assert method.clip.visual.ln_pre.weight.dtype == torch.float32                  # LayerNorms stay
            for _ in range(3):
                x = torch.randn(4, 3, tiny_backbone.image_size, tiny_backbone.image_size, generator=gen)
                with autocast(cpu, torch.bfloat16):
                    loss, _ = method.loss(method(x).float_logits(), torch.randint(0, 3, (4,), generator=gen))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        assert weight.data_ptr() == fp32 and weight.dtype == torch.float32                   # put back
        return method.trainable_state()

    held, cast = run(True), run(False)
    assert held.keys() == cast.keys() and all(torch.equal(held[k], cast[k]) for k in held)


def test_trainable_tensors_stay_fp32_master_weights(tiny_backbone):
    method = build_method("bitfit", tiny_backbone, NAMES, "a photo of a {}.", {})
    trainable = method.trainable_parameters()
    with frozen_weights_in(method, torch.bfloat16):
        assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
        assert any(p.dtype == torch.bfloat16 for p in method.parameters() if not p.requires_grad)


def test_the_loss_watch_reads_rarely_and_names_the_first_bad_step():
    from bench.trainer import DivergedError, LossWatch, TrainStats

    stats = TrainStats()
    param = torch.nn.Parameter(torch.ones(3))
    watch = LossWatch(stats, TrainConfig(), {"w": param})
    for it, value in enumerate([2.0, 1.5, float("nan"), 1.0]):
        watch.push(torch.tensor(value), epoch=0, it=it)
    assert len(watch.pending) == 4 and math.isnan(stats.last_loss)       # nothing read back yet
    with pytest.raises(DivergedError, match="loss is nan at epoch 1, iteration 3 .*last finite loss 1.5"):
        watch.read()
    watch.push(torch.tensor(0.5), epoch=1, it=4)
    with torch.no_grad():
        param[1] = float("inf")
    with pytest.raises(DivergedError, match="trainable tensor w is not finite at epoch 2, iteration 5"):
        watch.read()
