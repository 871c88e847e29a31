"""Text-tower cost per training step with and without exact truncation (prompts cut after their end-of-text).

Usage:
    python benchmarks/text_encoding.py                                   # ViT-B-16 text tower, 100 classes, CPU
    python benchmarks/text_encoding.py --backbone ViT-B-16 --classes 100,1000 --steps 3   # on a GPU
    python benchmarks/text_encoding.py --backbone bench-mini --classes 100,1000

Class names are ImageNet's (open_clip's copy), in "a photo of a {}." prompts, as ClipFit / CLIP-LoRA encode them
every step. Per setting: forward and forward+backward ms per step (gradients into the text FFN biases, as
ClipFit), the encoded length, the speed-up, and the largest |Δ| between truncated and full-context features.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # noqa: E402
from tabulate import tabulate  # noqa: E402

from bench.backbone import encode_text, load_backbone, truncate_tokens  # noqa: E402


def timed(fn, steps: int, device) -> float:
    fn()                                                   # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / steps


def measure(bb, n: int, steps: int, device, amp) -> list:
    model = bb.fresh_model().to(device)
    biases = [b.mlp.c_proj.bias for b in model.transformer.resblocks]
    for b in biases:
        b.requires_grad_(True)
    names = [IMAGENET_CLASSNAMES[i % 1000] for i in range(n)]
    full = bb.tokenize([f"a photo of a {c}." for c in names]).to(device)
    cut = truncate_tokens(model, full.cpu()).to(device)

    def forward(tokens):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return encode_text(model, tokens).float()

    def step(tokens):
        for b in biases:
            b.grad = None
        forward(tokens).square().mean().backward()

    with torch.no_grad():
        delta = (forward(cut) - forward(full)).abs().max().item()
    rows = []
    for name, tokens in (("full", full), ("truncated", cut)):
        with torch.no_grad():
            fwd = timed(lambda t=tokens: forward(t), steps, device)
        both = timed(lambda t=tokens: step(t), steps, device)
        rows.append((name, tokens.shape[1], fwd, both))
    (_, lf, ff, bf), (_, lt, ft, bt) = rows
    return [n, f"{lf} → {lt}", f"{ff:.1f}", f"{ft:.1f}", f"{ff / ft:.1f}×", f"{bf:.1f}", f"{bt:.1f}", f"{bf / bt:.1f}×",
            f"{delta:.1e}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="ViT-B-16")
    p.add_argument("--classes", default="100")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = None if args.precision == "fp32" or (args.precision == "auto" and device.type != "cuda") else torch.bfloat16
    bb = load_backbone(args.backbone, None)
    rows = [measure(bb, int(n), args.steps, device, amp) for n in args.classes.split(",")]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.backbone} text tower · {'fp32' if amp is None else 'bf16 autocast'} · {where}")
    print(tabulate(rows, headers=["classes", "length", "fwd ms full", "fwd ms cut", "fwd ×", "fwd+bwd ms full",
                                  "fwd+bwd ms cut", "fwd+bwd ×", "max |Δ|"], tablefmt="github"))


if __name__ == "__main__":
    main()
