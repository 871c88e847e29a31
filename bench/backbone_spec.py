"""What a backbone is, decided without torch: architecture, weights, activation, and short labels.

Usage:
    >>> spec = resolve_backbone("ViT-B-16", "openai")
    >>> spec.activation, spec.weights_label
    ('quick_gelu', 'openai')
    >>> resolve_backbone("arch/my-vit.json", "/ckpt/w.pt").arch_config["embed_dim"]

`backbone` is an open_clip or bench architecture name, a JSON architecture file (`path/to/arch.json`, open_clip's
model-config format, named by its file stem), or open_clip's `local-dir:DIR` / `hf-hub:org/repo` (config and
weights from there). `pretrained` is an open_clip tag, a local weights file (.pt/.pth/.bin/.safetensors,
OpenAI's TorchScript release archives included), a registered name (`mini-world`), or none/random.

Named weights: a provider registers a name and how it resolves to a checkpoint file (`register_named_weights`);
the mini world registers `mini-world` when `bench.mini` is imported, and third-party packages can do the same
through the `bench.weights` entry-point group. This module and bench.backbone only look names up, so the backbone
door does not depend on any provider.

Activation: OpenAI CLIP (and several other releases) was trained with QuickGELU, x·σ(1.702x), but open_clip
builds nn.GELU unless told. Bench decides, in this order: `--activation` > what the weights say (the tag's
pretrained config; a TorchScript archive or an OpenAI-layout state dict means QuickGELU) > the architecture's
`quick_gelu`. Where the weights cannot tell, `notice` says in one line what was chosen and how to choose the
other. The activation is part of every cell's config, so it is part of the cell id and of feature-cache keys.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError, did_you_mean
from bench.registry import Registry

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
RANDOM = (None, "", "none", "random")
ACTIVATIONS = ("quick_gelu", "gelu")
SCHEMES = ("local-dir:", "hf-hub:")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")   # only OpenAI's releases carry these


@dataclass(frozen=True)
class BackboneSpec:
    arch: str                          # open_clip name (a JSON file's stem) or "local-dir:/abs" / "hf-hub:org/repo"
    pretrained: str | None             # tag, absolute weights path, registered name ("mini-world"), or None (random)
    activation: str                    # quick_gelu | gelu
    arch_json: str | None = None       # a JSON architecture file's config (canonical JSON), carried to workers
    explicit: bool = False             # the activation was chosen by the user
    reason: str = ""                   # why this activation, for logs
    notice: str | None = None          # one line when bench could not tell from the weights

    @property
    def arch_config(self) -> dict | None:
        return json.loads(self.arch_json) if self.arch_json else None

    @property
    def label(self) -> str:
        return backbone_label(self.arch)

    @property
    def weights_label(self) -> str:
        return weights_label(self.pretrained)

    def cell_config(self) -> dict[str, Any]:
        """The keys a cell's config holds for its backbone (all part of the cell id)."""
        return {"backbone": self.arch, "pretrained": self.pretrained, "activation": self.activation,
                "backbone_config": self.arch_config}


NAMED_WEIGHTS: Registry = Registry("named weights", entry_point_group="bench.weights")


def register_named_weights(name: str, target) -> None:
    """`name` resolves through `target`, a callable (or a lazy "module:function") returning the checkpoint path;
    it may build the weights first (the mini world does)."""
    NAMED_WEIGHTS.register_lazy(name, target) if isinstance(target, str) else NAMED_WEIGHTS.register(name)(target)


def is_named_weights(pretrained: str | None) -> bool:
    return pretrained is not None and pretrained in NAMED_WEIGHTS.names()


def named_weights_path(name: str) -> str:
    """The checkpoint file a registered name stands for (its provider may build it now)."""
    return str(NAMED_WEIGHTS.get(name)())


def backbone_label(arch: str) -> str:
    """Short display name: local-dir:/a/b/my-model → local-dir:my-model."""
    if arch.startswith("local-dir:"):
        return "local-dir:" + Path(arch[len("local-dir:"):]).name
    return arch


def display_backbone(arch: str, activation: str | None) -> str:
    """The backbone as tables show it: open_clip's own naming, so ViT-B-16 built with QuickGELU (OpenAI weights)
    reads ViT-B-16-quickgelu and never shares a row with a GELU build."""
    label = backbone_label(arch)
    if activation == "quick_gelu" and not label.endswith("-quickgelu"):
        label += "-quickgelu"
    return label


def weights_label(pretrained: str | None) -> str:
    """Short display name of the weights: a tag as is, a file by its name, None as 'random'."""
    if pretrained in RANDOM:
        return "random"
    if "/" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES):
        return Path(pretrained).name
    return pretrained


def _model_config_dirs() -> list[Path]:
    dirs = [CONFIG_DIR]
    spec = importlib.util.find_spec("open_clip")
    if spec and spec.origin:
        dirs.append(Path(spec.origin).parent / "model_configs")
    return dirs


def list_backbones() -> list[str]:
    """open_clip's architectures plus bench's own, read from their JSON files (no torch import)."""
    return sorted({p.stem for d in _model_config_dirs() for p in d.glob("*.json")})


def builtin_config(name: str) -> dict | None:
    for folder in _model_config_dirs():
        path = folder / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


@functools.cache
def _quick_gelu_tags() -> dict[str, list[str]]:
    return json.loads((Path(__file__).parent / "quickgelu_tags.json").read_text())["quick_gelu_tags"]


def tag_quick_gelu(arch: str, tag: str) -> bool:
    """Whether open_clip's pretrained config for (arch, tag) says QuickGELU (bench's copy of that table)."""
    return tag in _quick_gelu_tags().get(arch, [])


def _read_json(path: Path, what: str) -> dict:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BenchError(f"cannot read {what} {path}: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise BenchError(f"malformed {what} {path}: {err.msg} at line {err.lineno}") from err
    if not isinstance(raw, dict):
        raise BenchError(f"malformed {what} {path}: expected a JSON object")
    return raw


def _check_arch_config(cfg: dict, source: str) -> dict:
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise BenchError(f"architecture {source} lacks {', '.join(missing)} (open_clip model-config format)")
    return cfg


def _hf_config(repo: str) -> dict:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError as err:
        raise BenchError("hf-hub: backbones need the huggingface_hub package") from err
    try:
        path = hf_hub_download(repo, "open_clip_config.json")
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise BenchError(f"hf-hub:{repo}: cannot get open_clip_config.json ({type(err).__name__}); offline, download "
                         "it once with the hub reachable or use local-dir:DIR") from err
    return _read_json(Path(path), "open_clip config").get("model_cfg") or {}


def _arch(backbone: str, arch_config: dict | None) -> tuple[str, dict | None, dict]:
    """(arch, the JSON file's config to carry or None, the effective model config)."""
    if arch_config is not None:                                  # from a cell config: no file needed
        return backbone, arch_config, _check_arch_config(arch_config, backbone)
    if backbone.startswith("local-dir:"):
        folder = Path(backbone[len("local-dir:"):]).expanduser().resolve()
        config = folder / "open_clip_config.json"
        if not config.is_file():
            raise BenchError(f"backbone {backbone}: {config} is missing (a local-dir: folder holds "
                             "open_clip_config.json and the weights)")
        return f"local-dir:{folder}", None, _read_json(config, "open_clip config").get("model_cfg") or {}
    if backbone.startswith("hf-hub:"):
        return backbone, None, _hf_config(backbone[len("hf-hub:"):])
    if backbone.endswith(".json") or os.sep in backbone:
        path = Path(backbone).expanduser()
        if not path.is_file():
            raise BenchError(f"architecture file {path} does not exist (--backbone takes an architecture name, "
                             "a JSON architecture file, local-dir:DIR or hf-hub:org/repo)")
        cfg = _check_arch_config(_read_json(path, "architecture file"), str(path))
        known = builtin_config(path.stem)
        if known is not None and known != cfg:
            raise BenchError(f"architecture file {path} is named like the built-in '{path.stem}' but differs; "
                             "rename the file")
        return path.stem, cfg, cfg
    known = builtin_config(backbone)
    if known is None:
        raise did_you_mean("backbone", backbone, list_backbones())
    return backbone, None, known


def _pretrained(arch: str, pretrained: str | None) -> str | None:
    if pretrained in RANDOM:
        return None
    if arch.startswith(SCHEMES):
        raise BenchError(f"backbone {arch} brings its own weights; drop --pretrained {pretrained}")
    if is_named_weights(pretrained):
        return pretrained
    if pretrained.endswith(WEIGHT_SUFFIXES) or "/" in pretrained:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise BenchError(f"pretrained weights file {path} does not exist (--pretrained takes an open_clip tag "
                             "or a local .pt/.pth/.bin/.safetensors file)")
        if path.suffix not in (".npz", ".npy") and _sniff(str(path.resolve()), *_stamp(path)) == "unknown":
            raise BenchError(f"weights file {path} is not a checkpoint (not a torch or safetensors state dict nor a "
                             "TorchScript archive)")
        return str(path.resolve())
    return pretrained


def resolve_backbone(backbone: str, pretrained: str | None = None, activation: str | None = None,
                     arch_config: dict | None = None) -> BackboneSpec:
    """Decide architecture, weights and activation (no torch, no weights loaded)."""
    if activation not in (None, "", "auto") and activation not in ACTIVATIONS:
        raise did_you_mean("activation", activation, ACTIVATIONS + ("auto",))
    arch, carried, cfg = _arch(backbone, arch_config)
    weights = _pretrained(arch, pretrained)
    arch_quick = bool(cfg.get("quick_gelu", False))
    arch_act = "quick_gelu" if arch_quick else "gelu"
    carried_json = json.dumps(carried, sort_keys=True) if carried is not None else None
    notice = None
    if activation in ACTIVATIONS:
        act, reason = activation, "chosen with --activation"
    elif weights is None or is_named_weights(weights) or arch.startswith(SCHEMES):
        act, reason = arch_act, f"the architecture config of {backbone_label(arch)}"
    elif Path(weights).is_file():
        kind = _sniff(weights, *_stamp(Path(weights)))
        if kind in ("torchscript", "openai_state_dict"):
            act, reason = "quick_gelu", f"{Path(weights).name} is an OpenAI release ({kind.replace('_', ' ')})"
        else:
            act, reason = arch_act, f"the architecture config of {backbone_label(arch)}"
            if not arch_quick:
                other = "quick_gelu" if act == "gelu" else "gelu"
                notice = (f"weights file {Path(weights).name} does not say which activation it was trained with; "
                          f"using {act} as architecture '{backbone_label(arch)}' says (for OpenAI-trained weights "
                          f"pass --activation {other} or an -quickgelu architecture)")
    else:
        tag_quick = tag_quick_gelu(arch, weights)
        act = "quick_gelu" if tag_quick or arch_quick else "gelu"
        reason = (f"open_clip's pretrained config of tag '{weights}'" if tag_quick
                  else f"the architecture config of {backbone_label(arch)}")
    return BackboneSpec(arch, weights, act, carried_json, activation in ACTIVATIONS, reason, notice)


def spec_from_cell(config: dict) -> BackboneSpec:
    """The backbone of a planned cell: everything it needs is in its config (workers need no files but weights)."""
    return resolve_backbone(config["backbone"], config["pretrained"], config.get("activation"),
                            config.get("backbone_config"))


# ---- what a weights file is, read without torch and without unpickling ----

def _pickle_strings(data: bytes, max_pickles: int = 1) -> set[str]:
    """String constants of (up to `max_pickles` consecutive) pickles, read with pickletools: nothing is executed.
    torch's legacy format writes a few small pickles (magic, protocol, sys info) before the object's."""
    out: set[str] = set()
    stream = io.BytesIO(data)
    try:
        for _ in range(max_pickles):
            for op, arg, _ in pickletools.genops(stream):
                if isinstance(arg, str) and "UNICODE" in op.name:
                    out.add(arg)
    except (ValueError, struct.error, EOFError):
        pass
    return out


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=16)
def _sniff(path: str, mtime_ns: int, size: int) -> str:
    """sniff_weights once per file version (planning resolves the backbone for every cell)."""
    return sniff_weights(Path(path))


def sniff_weights(path: Path) -> str:
    """torchscript | openai_state_dict | state_dict | unknown, from the file's structure alone."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                    return "torchscript"
                pkl = next((n for n in names if n.endswith("/data.pkl")), None)
                keys = _pickle_strings(zf.read(pkl)) if pkl else set()
        elif path.suffix == ".safetensors":
            with open(path, "rb") as fh:
                size = struct.unpack("<Q", fh.read(8))[0]
                keys = set(json.loads(fh.read(min(size, 1 << 26))))
        else:
            with open(path, "rb") as fh:
                keys = _pickle_strings(fh.read(1 << 24), max_pickles=4)
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError, struct.error, UnicodeDecodeError):
        return "unknown"
    if all(k in keys for k in OPENAI_EXTRA_KEYS):
        return "openai_state_dict"
    return "state_dict" if keys else "unknown"
