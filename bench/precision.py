"""The precision policy: which autocast a run uses, and frozen weights held once in that dtype while it trains.

Usage:
    >>> amp = autocast_dtype(cfg, device)                  # None (fp32) | torch.bfloat16 | torch.float16
    >>> with autocast(device, amp):
    ...     logits = method(images).logits
    >>> with frozen_weights_in(method, amp):               # the training loop: no per-step weight casts
    ...     train_steps()

Trainable tensors always stay fp32 (master weights); autocast runs matmuls and convolutions in bf16/fp16. Under
autocast every frozen fp32 weight of a linear layer or a convolution is cast again on every call (autocast keeps
a cast only for tensors that require grad): ~200 casts a ViT-B/16 step. `frozen_weights_in` casts them once for
the training loop and puts the fp32 tensors back after it. The values are the same (autocast's cast is the same
rounding), so the numbers are too; only tensors that every consumer casts anyway are touched (the inputs of
linear, conv and attention projections), never LayerNorm, embedding or positional parameters, which autocast keeps
in fp32, and the text stream's dtype, which open_clip reads off a weight, is pinned to what it was
(tests/test_train_step.py trains both ways to the same tensors). Only for training: in eval mode under CPU
autocast nn.MultiheadAttention takes its fused fast path only with fp32 weights, another kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from bench.config import resolve_precision

# the autocast dtype of each concrete precision (None: plain fp32); pure_fp16 also holds fp16 weights (bench.regime)
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "pure_fp16": torch.float16}


def resolved_precision(cfg, device: torch.device) -> str:
    """The precision that actually runs on `device`: `auto` resolved by the same rule planning uses
    (bench.config.resolve_precision: bf16 on CUDA, fp32 elsewhere)."""
    return resolve_precision(cfg.precision, "cuda" if device.type == "cuda" else "cpu")


def autocast_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """None = plain fp32. Weights always stay fp32 (master weights); autocast runs the matmuls in low precision."""
    return AUTOCAST[resolved_precision(cfg, device)]


def autocast(device: torch.device, dtype: torch.dtype | None, cache: bool = True):
    """The run's autocast context (training and evaluation alike); a no-op for fp32. `cache=False` inside a CUDA
    graph capture (autocast's cast cache must not outlive the capture)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None,
                          cache_enabled=cache)


def _autocast_inputs(module: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters of `module` (not its children) that only ever feed autocast's low-precision ops."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        names = ("weight", "bias")
    elif isinstance(module, nn.MultiheadAttention):
        names = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")
    else:
        names = getattr(module, "autocast_linear_params", ())   # e.g. LoRALinear's frozen W, b; CLIP's projections
    for name in names:
        p = module._parameters.get(name)
        if p is not None:
            yield p


@contextlib.contextmanager
def frozen_weights_in(model: nn.Module, dtype: torch.dtype | None):
    """Hold the frozen (requires_grad=False) fp32 inputs of linear/conv/attention projections in `dtype` inside
    the block, restoring the very same fp32 tensors after it. A no-op for fp32 (dtype None)."""
    if dtype is None:
        yield 0
        return
    saved: list[tuple[nn.Parameter, torch.Tensor]] = []
    seen: set[int] = set()
    pinned = [m for m in model.modules() if hasattr(m, "get_cast_dtype") and not hasattr(m, "pinned_cast_dtype")]
    for module in pinned:          # open_clip infers the text stream's dtype from a weight: keep what it was
        module.pinned_cast_dtype = module.get_cast_dtype()
    for module in model.modules():
        for p in _autocast_inputs(module):
            if p.requires_grad or p.dtype != torch.float32 or id(p) in seen:
                continue
            seen.add(id(p))
            saved.append((p, p.data))
            p.data = p.data.to(dtype)
    try:
        yield len(saved)
    finally:
        for p, data in saved:
            p.data = data
        for module in pinned:
            del module.pinned_cast_dtype
