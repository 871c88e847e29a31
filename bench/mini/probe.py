"""Quick self-checks of the mini world: zero-shot accuracy and a small ClipFit-style fine-tuning run per dataset.

Usage:
    >>> from bench.mini.world import ensure_world
    >>> from bench.mini.probe import zero_shot_table, finetune_check
    >>> w = ensure_world()
    >>> zero_shot_table(w)                     # {dataset: (accuracy %, chance %)} on the test split
    >>> finetune_check(w, "mini_shapes")       # base/new accuracy before and after 16-shot tuning

Independent of bench's trainer on purpose (reads the split JSONs directly): zero-shot is the standard CLIP recipe
(normalised image features . normalised text features of the card template, argmax). The fine-tuning check trains
only the image-tower LayerNorms and the text MLP c_proj biases ("ClipFit") with cross-entropy on 16 shots per
base class, using bench's train augmentation (RandomResizedCrop + flip), and reports base and new test accuracy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.mini.pretrain import MEAN, STD, fixed_threads, load_model, tokenizer
from bench.mini.suite import spec


def load_split(data_root: Path, name: str, part: str) -> tuple[list[Path], np.ndarray, list[str]]:
    s = spec(name)
    folder = Path(data_root) / name
    rows = json.loads((folder / s.split_file).read_text())[part]
    classes = [c.replace("_", " ") for c in sorted(s.classes)]
    return [folder / "images" / r[0] for r in rows], np.array([r[1] for r in rows]), classes


def transforms(rrc_scale: tuple[float, float] | None):
    """bench's test transform (rrc_scale None) or its train transform with that crop scale."""
    from torchvision import transforms as T

    bic = T.InterpolationMode.BICUBIC
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if rrc_scale is None:
        return T.Compose([T.Resize(32, interpolation=bic), T.CenterCrop(32), *norm])
    return T.Compose([T.RandomResizedCrop(32, scale=tuple(rrc_scale), interpolation=bic), T.RandomHorizontalFlip(), *norm])


def _batch(paths: list[Path], tf) -> torch.Tensor:
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(tf(im.convert("RGB")))
    return torch.stack(out)


def text_features(model, template: str, classes: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(tokenizer()([template.format(c) for c in classes]), normalize=True)


def accuracy(model, x: torch.Tensor, y: np.ndarray, txt: torch.Tensor) -> float:
    with torch.no_grad():
        pred = (model.encode_image(x, normalize=True) @ txt.t()).argmax(1).numpy()
    return 100.0 * float((pred == y).mean())


def zero_shot(model, data_root: Path, name: str, part: str = "test", rrc_scale=None, seed: int = 0) -> float:
    paths, y, classes = load_split(data_root, name, part)
    torch.manual_seed(seed)
    return accuracy(model, _batch(paths, transforms(rrc_scale)), y, text_features(model, spec(name).template, classes))


def zero_shot_table(world, part: str = "test", rrc_scale=None) -> dict[str, tuple[float, float]]:
    """{dataset: (zero-shot accuracy %, chance %)} of the world's pretrained mini CLIP."""
    with fixed_threads(2):
        model = load_model(world.checkpoint)
        return {n: (zero_shot(model, world.data_root, n, part, rrc_scale), 100.0 / len(spec(n).classes))
                for n in world.datasets}


def _subset(y: np.ndarray, labels: list[int]) -> np.ndarray:
    return np.flatnonzero(np.isin(y, labels))


def finetune_check(world, name: str, shots: int = 16, steps: int = 60, lr: float = 1e-3, batch: int = 32,
                   rrc_scale=(0.8, 1.0), seed: int = 1) -> dict[str, float]:
    """Zero-shot vs ClipFit-tuned accuracy on base and new test classes (percent)."""
    with fixed_threads(2):
        model = load_model(world.checkpoint)
        tpaths, ty, classes = load_split(world.data_root, name, "train")
        epaths, ey, _ = load_split(world.data_root, name, "test")
        n = len(classes)
        base, new = list(range(math.ceil(n / 2))), list(range(math.ceil(n / 2), n))
        rng = np.random.default_rng(seed)
        pick = np.concatenate([rng.choice(np.flatnonzero(ty == c), min(shots, int((ty == c).sum())), replace=False)
                               for c in base])
        images = []
        for i in pick:
            with Image.open(tpaths[i]) as im:
                images.append(im.convert("RGB"))
        labels = torch.from_numpy(ty[pick])
        test = _batch(epaths, transforms(None))
        template = spec(name).template
        tok = tokenizer()([template.format(c) for c in classes])

        def evaluate() -> tuple[float, float]:
            model.eval()
            txt = text_features(model, template, classes)
            b, nw = _subset(ey, base), _subset(ey, new)
            acc_b = accuracy(model, test[b], ey[b], txt[base])
            acc_n = accuracy(model, test[nw], ey[nw] - len(base), txt[new]) if new else float("nan")
            return acc_b, acc_n

        before = evaluate()
        for p in model.parameters():
            p.requires_grad_(False)
        params = [p for k, p in model.named_parameters()
                  if (k.startswith("visual.") and any(part.startswith("ln") for part in k.split(".")))
                  or (k.startswith("transformer.") and k.endswith("mlp.c_proj.bias"))]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        tf = transforms(rrc_scale)
        torch.manual_seed(seed)
        gen = np.random.default_rng(seed + 7)
        model.train()
        for _ in range(steps):
            idx = gen.choice(len(images), min(batch, len(images)), replace=False)
            x = torch.stack([tf(images[i]) for i in idx])
            img = model.encode_image(x, normalize=True)
            txt = model.encode_text(tok[base], normalize=True)
            loss = F.cross_entropy(model.logit_scale.exp() * img @ txt.t(), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = evaluate()
    return {"base_zs": before[0], "base_ft": after[0], "new_zs": before[1], "new_ft": after[1],
            "trainable": float(sum(p.numel() for p in params))}
