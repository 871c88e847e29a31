"""Training throughput, peak memory and trainable parameters of every method on one architecture.

Usage:
    python benchmarks/methods_throughput.py                              # bench-mini... on the CPU
    python benchmarks/methods_throughput.py --backbone ViT-B-16 --batch 32 --steps 5 --classes 100
    python benchmarks/methods_throughput.py --backbone ViT-B-16 --precision bf16   # on a GPU

Random weights (speed does not depend on them), random images at the backbone's input size, C class prompts
re-encoded every step where the method does so. Prints a table: method, trainable params, images/s, ms/step,
peak memory (CUDA: max allocated; CPU: process max RSS growth).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from bench.backbone import load_backbone  # noqa: E402
from bench.config import TrainConfig, resolve  # noqa: E402
from bench.methods import build_method  # noqa: E402
from bench.precision import autocast_dtype  # noqa: E402
from bench.trainer import make_optimizer  # noqa: E402

METHODS = ["zeroshot", "linear_probe", "clip_adapter", "coop", "clipfit", "lora", "full_ft", "cocoop", "kgcoop",
           "maple", "promptsrc", "tip_adapter", "tip_adapter_f", "bitfit"]


def measure(name, bb, args, device) -> list:
    params, cfg = resolve(name, "dtd", "fewshot", 16)
    classnames = [f"class {i}" for i in range(args.classes)]
    method = build_method(name, bb, classnames, "a photo of a {}.", params, dataset="bench").to(device)
    if hasattr(method, "cache_keys"):                   # Tip-Adapter: a 16-shot cache of random unit keys
        keys = torch.nn.functional.normalize(torch.randn(16 * args.classes, bb.model.visual.output_dim), dim=-1)
        method.cache_keys = torch.nn.Parameter(keys.to(device)) if method.learn_keys else keys.to(device)
        method.cache_values = torch.eye(args.classes, device=device).repeat(16, 1)
    x = torch.randn(args.batch, 3, bb.image_size, bb.image_size, device=device)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    amp = autocast_dtype(TrainConfig(precision=args.precision), device)
    trainable = list(method.trainable_parameters().values())
    opt = make_optimizer(cfg, trainable, **method.optimizer_options()) if trainable else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step():
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = method.loss(method(x).float_logits(), y)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    method.train(opt is not None)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024) / 2**20
    return [name, f"{method.count_trainable():,}", f"{args.batch / dt:.1f}", f"{1000 * dt:.1f}", f"{peak:.0f}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="bench-mini")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bb = load_backbone(args.backbone, None)
    rows = [measure(m, bb, args, device) for m in args.methods.split(",")]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.backbone} · batch {args.batch} · {args.classes} classes · {args.precision} · {where}")
    print(tabulate(rows, headers=["method", "trainable", "images/s", "ms/step", "peak MiB"], tablefmt="github"))


if __name__ == "__main__":
    main()
