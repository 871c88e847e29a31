"""Mixed precision: every method × protocol completes under bf16, fp16 and fp32 autocast (fp32 master weights),
evaluation runs under the training autocast with fp32 logits, and every cache holds fp32."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from toydata import make_imagenet_like

from bench.cli import main
from bench.config import TrainConfig, resolve
from bench.methods import METHODS, build_method
from bench.results import ResultStore

# One name per method class, plus the presets that freeze a tower (their evaluation takes the cached-feature path):
# the other selective-tuning presets run the same code as bitfit on other tensors.
FROZEN_TOWER_PRESETS = ["clipfit_text_only", "clipfit_image_only"]


def gated_methods() -> list[str]:
    by_class: dict = {}
    for name in METHODS.names():
        by_class.setdefault(METHODS.get(name), name)
    return sorted(set(by_class.values()) | set(FROZEN_TOWER_PRESETS))


FAST = ["--set", "epochs=1", "--set", "iters_per_shot=1", "--set", "batch_size=8", "--no-leaderboard",
        "--shots", "2", "--seeds", "1"]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_every_method_and_protocol_completes(precision, toy, tmp_path):
    make_imagenet_like(toy)
    r = tmp_path / "r"
    methods = ",".join(gated_methods())
    common = ["run", "--methods", methods, "--data-root", str(toy), "--backbone", "bench-tiny", "--pretrained",
              "none", "--results", str(r), "--set", f"precision={precision}", *FAST]
    for protocol in (["--protocol", "fewshot", "--datasets", "toy"],
                     ["--protocol", "base2new", "--datasets", "toy"],
                     ["--protocol", "xd", "--source", "toy", "--datasets", "toy2"],
                     ["--protocol", "dg"]):
        assert main([*common, *protocol]) == 0, protocol
    results = [res for _, res in ResultStore(r).iter_results()]
    assert len(results) == 4 * len(gated_methods())
    assert all(res["status"] == "completed" and res["config"]["train"]["precision"] == precision for res in results)
    feats = list((r / "features").glob("*.safetensors"))
    assert feats and all(load_file(str(f))["features"].dtype == torch.float32 for f in feats)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_text_cache_is_fp32_and_evaluation_works_outside_the_training_autocast(precision, toy, tiny_backbone):
    """The CLIP-Adapter crash: class text features cached inside a bf16 autocast, reused against fp32 features."""
    from bench import cards
    from bench.data.splits import read_splits
    from bench.trainer import train

    params, _ = resolve("clip_adapter", "toy", "fewshot", 2)
    method = build_method("clip_adapter", tiny_backbone, ["red square", "green square", "blue square",
                                                          "yellow square", "purple square"],
                          "a photo of a {}.", params, dataset="toy")
    items = read_splits(cards.dataset_card("toy"), toy).train[:10]
    cfg = TrainConfig(epochs=1, batch_size=5, precision=precision, schedule="constant")
    train(method, items, cfg, shots=2, seed=1, device=torch.device("cpu"))
    assert method._text_cache is not None and method._text_cache.dtype == torch.float32
    with torch.no_grad():
        logits = method.logits_from_features(torch.randn(3, tiny_backbone.model.visual.output_dim))
    assert logits.dtype == torch.float32 and logits.shape == (3, 5)
