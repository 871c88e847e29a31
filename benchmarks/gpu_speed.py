"""GPU speed: the training step per method (ms, images/s, counted FLOPs, MFU against a measured matmul peak), CUDA
graphs on and off (and whether they train to the same tensors), the cell loop against the isolated step, and a
32-cell sweep at --cells-per-gpu 1, 2, 4.

Usage:
    python benchmarks/gpu_speed.py                                        # one CUDA GPU, ViT-B-16, ~4 minutes on an H200
    python benchmarks/gpu_speed.py --parts steps --classes 100            # only the step table
    python benchmarks/gpu_speed.py --backbone bench-tiny --classes 10 --sweep-cells 4 --packing 1,2   # CPU smoke

Random weights (speed does not depend on them). The step is the trainer's own (bench.train_step with the frozen
weights held in the autocast dtype, as in a cell), bf16, batch 32. FLOPs are counted by torch.utils.flop_counter
over one step (forward and backward as they run: a frozen image tower costs only its forward). MFU = FLOPs per
step / step time / the bf16 peak of an 8192³ matmul measured here. The cell part runs `bench run` on generated
JPEGs (100 classes, K = 16) with graphs off and on: the training loop's images/s (result.json cost) against the
isolated step, and the accuracies of both. The sweep runs clipfit and coop × 16 seeds (K = 4, 2 epochs) into a
fresh results tree per packing and reports wall time and cells per minute.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STEP_METHODS = ["clipfit", "coop", "lora", "bitfit", "clip_adapter", "full_ft", "maple", "promptsrc", "cocoop"]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, n: int = 8192) -> float:
    """bf16 TFLOP/s of an n³ matmul (mean of 10 after 3 warm-ups); on the CPU a 1024³ fp32 one."""
    import torch

    n, dtype = (n, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12


def build(name: str, bb, classes: int, graphs: bool, device, seed: int = 0):
    """(method, step) as the trainer builds them, bf16 (fp32 on the CPU), card settings of DTD 16-shot."""
    import dataclasses

    import torch

    from bench.config import resolve
    from bench.methods import build_method
    from bench.train_step import make_step
    from bench.trainer import make_optimizer

    params, cfg = resolve(name, "dtd", "fewshot", 16)
    cfg = dataclasses.replace(cfg, precision="bf16" if device.type == "cuda" else "fp32", cuda_graphs=graphs)
    torch.manual_seed(seed)
    method = build_method(name, bb, [f"class {i}" for i in range(classes)], "a photo of a {}.", params,
                          dataset="bench").to(device)
    optimizer = make_optimizer(cfg, list(method.trainable_parameters().values()), **method.optimizer_options())
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    return method, make_step(method, optimizer, scaler, cfg, device)


def time_steps(name, bb, classes, batch, graphs, device, steps=20, warmup=6) -> tuple[float, float]:
    """(seconds per step, FLOPs per step)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.precision import frozen_weights_in

    method, step = build(name, bb, classes, graphs, device)
    x = torch.randn(batch, 3, bb.image_size, bb.image_size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    method.train()
    with frozen_weights_in(method, step.amp):
        counter = FlopCounterMode(display=False)
        with counter:
            super(type(step), step).__call__(x, y) if graphs else step(x, y)
        flops = counter.get_total_flops()
        for _ in range(warmup):
            step(x, y)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        sync(device)
    return (time.perf_counter() - t0) / steps, flops


def same_training(name, bb, classes, batch, device, steps=8) -> float:
    """max |Δ| of the trainable tensors after `steps` identical steps, graphs off vs on (same init, same batches)."""
    import torch

    from bench.precision import frozen_weights_in

    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(batch, 3, bb.image_size, bb.image_size, generator=gen).to(device),
                torch.randint(0, classes, (batch,), generator=gen).to(device)) for _ in range(steps)]
    out = []
    for graphs in (False, True):
        method, step = build(name, bb, classes, graphs, device, seed=3)
        method.train()
        torch.manual_seed(5)
        if device.type == "cuda":
            torch.cuda.manual_seed(5)
        with frozen_weights_in(method, step.amp):
            for x, y in batches:
                step(x, y)
        out.append({k: v.detach().float().cpu() for k, v in method.trainable_parameters().items()})
    return max(float((out[0][k] - out[1][k]).abs().max()) for k in out[0])


def step_table(args, device, peak) -> list[list]:
    from bench.backbone import load_backbone

    bb = load_backbone(args.backbone, None)
    rows = []
    for classes in args.classes:
        for name in args.methods:
            if name == "cocoop" and classes > 100:
                continue                                   # 32 × C prompts per step: a table of its own
            row = [name, classes]
            for graphs in (False, True):
                try:
                    dt, flops = time_steps(name, bb, classes, args.batch, graphs, device)
                    row += [f"{1000 * dt:.1f}", f"{args.batch / dt:.0f}"]
                    if not graphs:
                        row += [f"{flops / 1e12:.2f}", f"{100 * flops / dt / 1e12 / peak:.1f}"]
                    else:
                        row += [f"{100 * flops / dt / 1e12 / peak:.1f}"]
                except Exception as err:  # noqa: BLE001  (a row that fails says why; the table goes on)
                    row += [f"error: {type(err).__name__}: {str(err)[:80]}"]
            if classes == args.classes[0] and name in ("clipfit", "coop", "lora"):
                try:
                    row.append(f"{same_training(name, bb, classes, args.batch, device):.2e}")
                except Exception as err:  # noqa: BLE001
                    row.append(f"error: {type(err).__name__}")
            print(row, flush=True)
            rows.append(row)
    return rows


def bench_run(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench", "run", *argv], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-2000:], flush=True)
    return time.perf_counter() - t0


def results(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in root.rglob("result.json")]


def cell_part(args, work: Path, env: dict) -> list[list]:
    rows = []
    for graphs in ("false", "true"):
        root = work / f"cells-graphs-{graphs}"
        wall = bench_run(["--backbone", args.backbone, "--pretrained", "none", "--datasets", "speed100",
                          "--data-root", str(work / "data"), "--methods", "clipfit,coop", "--shots", "16",
                          "--seeds", "1", "--results", str(root), "--no-leaderboard", "--set", "epochs=2",
                          "--set", f"cuda_graphs={graphs}"], env)
        for res in sorted(results(root), key=lambda r: r["config"]["method"]):
            c = res.get("cost") or {}
            rows.append([res["config"]["method"], graphs, res["status"], f"{c.get('train_s', 0):.2f}",
                         f"{c.get('images_per_s', 0):.0f}", f"{(res.get('metrics') or {}).get('all', {}).get('acc', float('nan')):.2f}",
                         f"{wall:.1f}"])
            print(rows[-1], flush=True)
    return rows


def sweep_part(args, work: Path, env: dict) -> list[list]:
    rows = []
    seeds = ",".join(str(s) for s in range(1, args.sweep_cells // 2 + 1))
    for n in args.packing:
        root = work / f"sweep-{n}"
        wall = bench_run(["--backbone", args.backbone, "--pretrained", "none", "--datasets", "speed100",
                          "--data-root", str(work / "data"), "--methods", "clipfit,coop", "--shots", "4",
                          "--seeds", seeds, "--results", str(root), "--no-leaderboard", "--set", "epochs=2",
                          "--cells-per-gpu", str(n)], env)
        done = [r for r in results(root) if r["status"] == "completed"]
        rows.append([n, f"{len(done)}/{args.sweep_cells}", f"{wall:.1f}", f"{60 * len(done) / wall:.1f}"])
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="ViT-B-16")
    p.add_argument("--methods", default=",".join(STEP_METHODS))
    p.add_argument("--classes", default="100,1000")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--parts", default="steps,cells,sweep")
    p.add_argument("--sweep-cells", type=int, default=32)
    p.add_argument("--packing", default="1,2,4")
    p.add_argument("--work", type=Path, help="generated data, decoded cache and results (kept; default: a new "
                   "temporary folder)")
    args = p.parse_args()
    args.methods, args.classes = args.methods.split(","), [int(c) for c in args.classes.split(",")]
    args.packing = [int(n) for n in args.packing.split(",")]
    import torch
    from tabulate import tabulate

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    parts = args.parts.split(",")
    if "steps" in parts:
        peak = matmul_peak(device)
        print(f"matmul peak: {peak:.0f} TFLOP/s ({where})", flush=True)
        rows = step_table(args, device, peak)
        print(f"\ntraining step · {args.backbone} · batch {args.batch} · bf16 · {where} · peak {peak:.0f} TFLOP/s")
        print(tabulate(rows, headers=["method", "classes", "ms eager", "img/s eager", "TFLOP/step", "MFU % eager",
                                      "ms graphs", "img/s graphs", "MFU % graphs", "max |Δ| graphs vs eager"],
                       tablefmt="github"), flush=True)
    if "cells" in parts or "sweep" in parts:
        from bench.data.synthetic import make_dataset

        work = args.work or Path(tempfile.mkdtemp(prefix="bench-gpu-speed-"))
        t0 = time.perf_counter()
        make_dataset(work / "data", work / "cards", "speed100", 100, (16, 1, 5), size=(375, 500))
        print(f"data: 100 classes × (16 train + 1 val + 5 test) JPEGs in {time.perf_counter() - t0:.0f} s", flush=True)
        env = {**os.environ, "BENCH_CARDS_PATH": str(work / "cards"), "BENCH_DECODE_CACHE": str(work / "decoded")}
        if "cells" in parts:
            rows = cell_part(args, work, env)
            print(f"\ncells · {args.backbone} · clipfit, coop · 100 classes · K = 16 · 2 epochs · {where}")
            print(tabulate(rows, headers=["method", "cuda_graphs", "status", "train s", "loop img/s", "acc",
                                          "bench run s"], tablefmt="github"), flush=True)
        if "sweep" in parts:
            rows = sweep_part(args, work, env)
            print(f"\nsweep · {args.sweep_cells} cells (clipfit, coop × {args.sweep_cells // 2} seeds, K = 4, "
                  f"2 epochs, 100 classes) · {args.backbone} · {where}")
            print(tabulate(rows, headers=["cells per GPU", "completed", "wall s", "cells / min"],
                           tablefmt="github"), flush=True)


if __name__ == "__main__":
    main()
