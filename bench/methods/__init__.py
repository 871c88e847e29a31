"""Method registry: each method is one file in this package, registered lazily by name.

Usage:
    >>> from bench.methods import METHODS, build_method
    >>> METHODS.names()[:4]
    ['bitfit', 'clip_adapter', 'clipfit', 'clipfit_all_bias']

Third-party packages add methods through the `bench.methods` entry-point group
(`name = "package.module:Class"`, a subclass of `bench.methods.base.Method`) plus a card in BENCH_CARDS_PATH.
"""

from __future__ import annotations

from bench.registry import Registry

METHODS: Registry = Registry("method", entry_point_group="bench.methods")
for _name, _target in {
    "zeroshot": "bench.methods.zeroshot:ZeroShot",
    "clipfit": "bench.methods.clipfit:ClipFit",
    "coop": "bench.methods.coop:CoOp",
    "clip_adapter": "bench.methods.clip_adapter:ClipAdapter",
    "lora": "bench.methods.lora:LoRA",
    "full_ft": "bench.methods.full_ft:FullFineTune",
    "linear_probe": "bench.methods.linear_probe:LinearProbe",
    "cocoop": "bench.methods.cocoop:CoCoOp",
    "kgcoop": "bench.methods.kgcoop:KgCoOp",
    "maple": "bench.methods.maple:MaPLe",
    "promptsrc": "bench.methods.promptsrc:PromptSRC",
    "tip_adapter": "bench.methods.tip_adapter:TipAdapter",
    "tip_adapter_f": "bench.methods.tip_adapter:TipAdapterF",
    "bitfit": "bench.methods.selective:SelectiveTuning",
    "selective": "bench.methods.selective:SelectiveTuning",
    **{f"clipfit_{preset}": "bench.methods.selective:SelectiveTuning" for preset in (
        "text_only", "image_only", "text_bias", "image_bias", "all_bias", "text_bias_only", "image_bias_only")},
}.items():
    METHODS.register_lazy(_name, _target)


def build_method(name: str, backbone, classnames: list[str], template: str, params: dict, dataset: str = "",
                 truncate_text: bool = True):
    """Instantiate a registered method on a fresh copy of the backbone's model (`truncate_text`: encode prompts
    only up to their end-of-text token, exact under the causal mask; off on the slow path)."""
    from bench.methods.base import Method

    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method '{name}' resolves to {cls!r}, which is not a bench.methods.base.Method")
    return cls(backbone, classnames, template, params, dataset=dataset, truncate_text=truncate_text)
