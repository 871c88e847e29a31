"""The regime a cell runs in: bench's `default`, or `published`: each method as its official code ran it.

Usage:
    $ bench run --regime published --methods coop,kgcoop,tip_adapter_f
    >>> from bench.regime import regime_settings, marks
    >>> regime_settings("tip_adapter_f", "imagenet", "published")
    {'precision': 'pure_fp16', 'select_epoch_on': 'test', 'search_on': 'test'}

What `published` changes, per method (each item read in the official code named beside it):
- Pure fp16 (`precision: pure_fp16`): Dassl's `PREC: fp16`, the default of the train.py of CoOp, CoCoOp, CLIPFit,
  KgCoOp, MaPLe and PromptSRC (KaiyangZhou/CoOp train.py; minglllli/CLIPFit CLIPFit/train.py; htyao89/KgCoOp
  KgCoOp/train.py; muzairkhattak/multimodal-prompt-learning and muzairkhattak/PromptSRC train.py), and Tip-Adapter's
  `clip.load` on a GPU (gaopengcuhk/Tip-Adapter main.py). CLIP's weights are converted as OpenAI's `convert_weights`
  does (Linear/Conv weights and biases, attention projections, `proj`, `text_projection` to fp16; LayerNorms,
  embeddings and logit_scale stay fp32, LayerNorm computing in fp32); the tensors the official trainers create
  in the model's dtype are fp16 too (FP16_TENSORS below), the rest keep fp32 as there; the optimizer steps the
  fp16 tensors themselves: no fp32 master copy, no loss scaling. bench runs these fp16 weights under fp16 autocast
  so that its fp32 caches (class text features, frozen image features) meet them; autocast computes softmax,
  normalisation and the loss in fp32 where the official code stays in fp16.
- CLIP-LoRA (MaxZanella/CLIP-LoRA lora.py): fp16 autocast with a GradScaler and fp32 LoRA weights: bench's
  `precision: fp16`.
- PromptSRC's Gaussian prompt aggregation averages the whole state dict, frozen fp16 weights included, each tensor
  in its own dtype (PromptSRC trainers/promptsrc.py state_dict_weighting): `gpa_scope: model`.
- Test-set selection (marked "test-set selection" wherever shown): Tip-Adapter-F keeps the epoch with the best test
  accuracy and reports the higher of that and the searched accuracy (main.py run_tip_adapter_F); on ImageNet,
  Tip-Adapter(-F) search β and α on the test set (main_imagenet.py).
Methods with no official regime (CLIP-Adapter trains in fp32 and its card says so; full fine-tuning, the linear
probe, BitFit and the ClipFit ablation presets have no official code) run as in the default regime, but their
cells are still the published regime's (their own ids, marked rows).

The regime is a layer of settings between the card's overrides and the suite / --set (so `--set precision=auto`
isolates test-set selection, and `--set precision=pure_fp16` in the default regime isolates pure fp16). A
non-default regime is part of the cell's config (`regime`), hence of its id; default cells keep their ids.
Nothing here imports torch at module level.
"""

from __future__ import annotations

from typing import Any

from bench.errors import BenchError

REGIMES = ("default", "published")
PUBLISHED = "published"

# The official trainers' tensors created in the model's (fp16) dtype; CLIP's own weights are converted separately.
# CoOp/CoCoOp/KgCoOp: ctx_vectors with dtype=clip_model.dtype; CoCoOp: meta_net.half(); MaPLe: ctx and
# self.proj.half() (its deep text prompts and projections stay fp32); PromptSRC: ctx (its VPT tokens are fp32);
# ClipFit: its c_proj biases are CLIP's (converted), its image LayerNorms stay fp32; Tip-Adapter(-F): the cache
# keys come from fp16 features and the adapter is cast to the CLIP dtype.
FP16_TENSORS: dict[str, tuple[str, ...]] = {
    "zeroshot": (), "coop": ("ctx",), "cocoop": ("ctx", "meta_net"), "kgcoop": ("ctx",), "maple": ("ctx", "proj"),
    "promptsrc": ("ctx",), "clipfit": (), "tip_adapter": ("cache_keys",), "tip_adapter_f": ("cache_keys",),
}
AUTOCAST_FP16 = ("lora",)
TEST_SEARCH_DATASETS = ("imagenet",)        # no validation split: the official script searches on the test set


def check_regime(regime: str) -> str:
    if regime not in REGIMES:
        from bench.errors import did_you_mean

        raise did_you_mean("regime", regime, REGIMES)
    return regime


def regime_settings(method: str, dataset: str, regime: str) -> dict[str, Any]:
    """The settings the regime layer applies to one cell (empty for the default regime)."""
    if check_regime(regime) != PUBLISHED:
        return {}
    out: dict[str, Any] = {}
    if method in FP16_TENSORS:
        out["precision"] = "pure_fp16"
    elif method in AUTOCAST_FP16:
        out["precision"] = "fp16"
    if method == "promptsrc":
        out["gpa_scope"] = "model"
    if method == "tip_adapter_f":
        out["select_epoch_on"] = "test"
    if method in ("tip_adapter", "tip_adapter_f") and dataset in TEST_SEARCH_DATASETS:
        out["search_on"] = "test"
    return out


def selects_on_test(params: dict[str, Any]) -> bool:
    """Whether a cell's settings choose anything by test accuracy."""
    return params.get("select_epoch_on") == "test" or params.get("search_on") == "test"


def marks(config: dict[str, Any]) -> list[str]:
    """What a table row of this cell must say about its regime: [] for the default regime."""
    out = []
    if config.get("regime", "default") != "default":
        out.append(f"{config['regime']} regime")
    if selects_on_test(config.get("params") or {}):
        out.append("test-set selection")
    return out


def report_labels(config: dict[str, Any]) -> dict[str, Any]:
    """The report's regime column, and for a marked cell a method key and title of its own, so that no table
    averages or ranks it with the default regime's cells unmarked."""
    regime = config.get("regime", "default")
    found = marks(config)
    if not found:
        return {"regime": regime}
    title = config.get("method_title") or config["method"]
    return {"regime": regime, "method": f"{config['method']}@{regime}" if regime != "default" else
            f"{config['method']}@test-selection", "method_title": f"{title} ({', '.join(found)})"}


def test_items(config: dict[str, Any], evals: list) -> list:
    """The test items a method may select on (the first evaluation's), only where its settings say so."""
    return list(evals[0][2]) if selects_on_test(config.get("params") or {}) else []


# ---- pure fp16 (torch from here on) ----

def check_fp16(device) -> None:
    """A one-line error when torch cannot run CLIP's fp16 operations on `device` (before any work)."""
    import torch

    try:
        x = torch.ones(2, 4, 4, dtype=torch.float16, device=device)
        with torch.autocast(device.type, dtype=torch.float16):
            (x @ x).sum()
            torch.nn.functional.layer_norm(x.float(), (4,)).half()
            torch.nn.functional.conv2d(x[None], torch.ones(1, 2, 1, 1, dtype=torch.float16, device=device))
    except (RuntimeError, TypeError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BenchError(f"precision pure_fp16 (the published regime's) needs fp16 on {device.type}, which torch "
                         f"{torch.__version__} does not support here ({detail}); use a GPU or --set precision=fp32"
                         ) from None


def convert_weights(model) -> None:
    """OpenAI CLIP's `convert_weights`, on an open_clip model in place: Linear/Conv weights and biases, attention
    projections, `proj` and `text_projection` to fp16; LayerNorms (now computing in fp32 and casting back, as
    CLIP's LayerNorm), embeddings and logit_scale stay fp32; the image tower takes its input in its dtype."""
    import torch
    from open_clip.transformer import LayerNormFp32

    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.__class__ = LayerNormFp32
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            module.half()
        if isinstance(module, torch.nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                         "bias_k", "bias_v"):
                tensor = getattr(module, name, None)
                if tensor is not None:
                    tensor.data = tensor.data.half()
    for owner, name in ((model, "text_projection"), (model.visual, "proj")):
        tensor = getattr(owner, name, None)
        if isinstance(tensor, torch.nn.Parameter):
            tensor.data = tensor.data.half()
    conv = getattr(model.visual, "conv1", None)
    if conv is not None:                                           # CLIP: self.visual(image.type(self.dtype))
        conv.register_forward_pre_hook(lambda mod, args: (args[0].to(mod.weight.dtype), *args[1:]))


def cell_backbone(backbone, precision: str, device):
    """The backbone a cell builds its method from: as loaded, or (pure_fp16, after a check that `device` runs
    fp16) a half-precision copy, cached per process, whose id differs so that feature caches never mix the two."""
    if precision != "pure_fp16":
        return backbone
    check_fp16(device)
    return _half_backbone(backbone)


_HALF: dict[int, tuple[Any, Any]] = {}       # id(backbone) → (backbone, its half copy): the loaded one is cached too


def _half_backbone(backbone):
    import copy
    import dataclasses

    from bench.backbone import Backbone

    class HalfBackbone(Backbone):
        @property
        def id(self) -> str:
            return super().id + ":pure_fp16"

    if id(backbone) not in _HALF:
        model = copy.deepcopy(backbone.model)
        convert_weights(model)
        fields = {f.name: getattr(backbone, f.name) for f in dataclasses.fields(backbone)}
        _HALF.clear()
        _HALF[id(backbone)] = (backbone, HalfBackbone(**{**fields, "model": model}))
    return _HALF[id(backbone)][1]


def prepare(method, train_cfg) -> None:
    """Pure fp16: the method's own official-fp16 tensors to half (after `before_training`, so Tip-Adapter's keys
    exist); nothing for any other precision."""
    if train_cfg.precision != "pure_fp16":
        return
    import torch

    for name in FP16_TENSORS.get(method.name, ()):
        part = getattr(method, name)
        if isinstance(part, torch.nn.Module):
            part.half()
        else:                                                # a Parameter or buffer: same object, now fp16
            part.data = part.data.half()
    method._text_cache = None
