"""Training-state checkpoints without pickle: tensors in safetensors, everything else in JSON.

Usage:
    >>> save_state(ckpt_dir, trainable, optimizer, meta={"epoch": 3})
    >>> meta = load_state(ckpt_dir, method, optimizer)   # None when there is nothing to resume

Only trainable tensors and optimizer state are stored (ClipFit on ViT-B/16: ~46k values, not the 150M model).
Files are written to temporary names and renamed, so a killed process never leaves a half checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from bench.results import atomic_write


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, str(tmp), metadata=metadata))


def save_state(ckpt_dir: Path, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               meta: dict, extra: dict[str, torch.Tensor] | None = None) -> None:
    """One file, `state.safetensors`: tensors plus a JSON header (meta, param groups, scalar state). `extra`: a
    method's training state beyond its trainable tensors (PromptSRC's running prompt aggregate)."""
    opt = optimizer.state_dict()
    tensors = {f"param.{k}": v for k, v in trainable.items()}
    tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    scalars: dict[str, dict] = {}
    for idx, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    payload = {"meta": meta, "param_groups": opt["param_groups"], "scalars": scalars}
    save_tensors(ckpt_dir / "state.safetensors", tensors, metadata={"bench": json.dumps(payload)})


def load_state(ckpt_dir: Path, method, optimizer: torch.optim.Optimizer) -> dict | None:
    """Restore trainable tensors and optimizer state; returns the saved meta or None."""
    path = ckpt_dir / "state.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as fh:
        payload = json.loads(fh.metadata()["bench"])
    tensors = load_file(str(path))
    method.load_trainable_state({k[6:]: v for k, v in tensors.items() if k.startswith("param.")})
    method.load_extra_state({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, extra in payload["scalars"].items():
        state.setdefault(int(idx), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": payload["param_groups"]})
    return payload["meta"]
