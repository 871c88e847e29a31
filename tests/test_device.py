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
        loss, _ = method.loss(method(x).float_logits(), y)
        if loss.requires_grad:
            loss.backward()
        method.eval()
        with torch.no_grad():
            method(x)
            method.logits_from_features(torch.empty(2, dim, device="meta"))
            if method.supports_new_classes:
                method.retarget(NAMES[3:], "toy2", "a photo of a {}.")        # base-to-new / xd / dg targets
                assert method(x).logits.shape == (2, 2)
                method.logits_from_features(torch.empty(2, dim, device="meta"))


# ---- the order of the real cell flow: built, moved to the training device, and only then called ----

CALLED = ("before_training", "after_training", "forward", "loss", "logits_from_features", "retarget", "on_epoch_end")
PROTOCOLS = {"fewshot": ["--protocol", "fewshot", "--datasets", "toy"],
             "base2new": ["--protocol", "base2new", "--datasets", "toy"],
             "xd": ["--protocol", "xd", "--source", "toy", "--datasets", "toy2"],
             "dg": ["--protocol", "dg", "--source", "toy", "--targets", "toy2"]}


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_the_cell_flow_moves_every_method_before_any_hook_runs(protocol, toy, tmp_path, monkeypatch):
    """Every method × protocol through `bench run`: each hook, forward and loss runs on a method that was moved to
    the cell's training device first. (On a GPU a hook that runs before the move computes on the CPU copy: the
    Tip-Adapter cache was built that way and failed in every precision.) A fails-before-the-fix test: the cell
    used to call `before_training` before the trainer moved the method."""
    from bench import cell
    from bench.cli import main
    from bench.methods.base import Method
    from bench.results import ResultStore

    device = torch.device("cpu")
    monkeypatch.setattr(cell, "_device", lambda: device)
    early: list[str] = []
    real_to = Method.to

    def to(self, *args, **kwargs):
        target = torch._C._nn._parse_to(*args, **kwargs)[0]
        if target is not None:
            self.__dict__["placed_on"] = torch.device(target)
        return real_to(self, *args, **kwargs)

    def watched(name, real):
        def call(self, *args, **kwargs):
            if self.__dict__.get("placed_on") != device:
                early.append(f"{self.name}.{name}")
            return real(self, *args, **kwargs)
        return call

    monkeypatch.setattr(Method, "to", to)
    for cls in {cls for name in METHODS.names() for cls in METHODS.get(name).__mro__ if issubclass(cls, Method)}:
        for name in CALLED:
            if name in vars(cls):
                monkeypatch.setattr(cls, name, watched(name, vars(cls)[name]))
    root = tmp_path / "r"
    assert main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(root), "--no-leaderboard",
                 "--methods", ",".join(METHODS.names()), "--shots", "2", "--seeds", "1", "--set", "epochs=1",
                 "--set", "iters_per_shot=1", *PROTOCOLS[protocol]]) == 0
    results = [res for _, res in ResultStore(root).iter_results()]
    assert len(results) == len(METHODS.names()) and all(r["status"] == "completed" for r in results)
    assert not early, f"called before the method was on the training device: {sorted(set(early))}"
