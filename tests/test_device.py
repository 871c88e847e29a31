"""Device discipline: every tensor a method builds follows the model's device — in setup, in the forward and loss,
in evaluation and in `retarget` (new classes, cross-dataset targets).

The model is moved to the `meta` device and every op's tensor inputs are checked under a dispatch mode: an op
that sees a CPU tensor beside a meta one is exactly the op that fails with "expected all tensors to be on the
same device" on a GPU. (0-dim CPU scalars are legal everywhere; explicit copies move data on purpose.)
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bench.config import resolve
from bench.methods import METHODS, build_method

NAMES = ["red square", "green square", "blue square", "yellow square", "purple square"]
aten = torch.ops.aten
COPIES = {aten._to_copy, aten.copy_, aten._copy_from, aten._copy_from_and_resize, aten.to}


class SameDevice(TorchDispatchMode):
    """Raise on any op whose (non-scalar) tensor inputs live on more than one device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device for t in tree_leaves((args, kwargs))
                   if isinstance(t, torch.Tensor) and not (t.device.type == "cpu" and t.dim() == 0)}
        if len(devices) > 1 and func.overloadpacket not in COPIES:
            raise AssertionError(f"{func} mixes devices {sorted(map(str, devices))}")
        return func(*args, **kwargs)


def test_the_check_catches_a_mixed_op():
    with pytest.raises(AssertionError, match="mixes devices"), SameDevice():
        torch.nn.functional.embedding(torch.tensor([[1, 2]]), torch.empty(5, 3, device="meta"))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_tensor_follows_the_model_device(name, tiny_backbone):
    params, _ = resolve(name, "toy", "fewshot", 2)
    method = build_method(name, tiny_backbone, NAMES[:3], "a photo of a {}.", params, dataset="toy")
    method.to("meta")
    x = torch.empty(2, 3, tiny_backbone.image_size, tiny_backbone.image_size, device="meta")
    y = torch.zeros(2, dtype=torch.long, device="meta")
    dim = tiny_backbone.model.visual.output_dim
    with SameDevice():
        method.train()
        loss, _ = method.loss(method(x).float(), y)
        if loss.requires_grad:
            loss.backward()
        method.eval()
        with torch.no_grad():
            method(x)
            method.logits_from_features(torch.empty(2, dim, device="meta"))
            if method.supports_new_classes:
                method.retarget(NAMES[3:], "toy2", "a photo of a {}.")        # base-to-new / xd / dg targets
                assert method(x).shape == (2, 2)
                method.logits_from_features(torch.empty(2, dim, device="meta"))
