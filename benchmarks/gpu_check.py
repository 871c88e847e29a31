"""The GPU check: every method × protocol × precision runs a few steps on ViT-B-16 (random weights) on one CUDA
device through the real `bench run` path (data, trainer, evaluator under autocast, retarget to new classes and
other datasets), then the methods throughput table in bf16.

Usage:
    python benchmarks/gpu_check.py                  # on a CUDA machine (a few minutes on one H200)
    pytest -m gpu -s                                # the same, as a test (tests/test_gpu.py)
    python benchmarks/gpu_check.py --backbone bench-tiny --precisions bf16 --methods zeroshot,coop   # CPU smoke

Prints one row per (precision, protocol): cells completed, wall time, failures with their one-line errors; then
images/s, ms/step and peak GPU memory per method (batch 32, 100 classes). Exits non-zero if any cell failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tabulate import tabulate  # noqa: E402

METHODS = ["zeroshot", "clipfit", "coop", "clip_adapter", "lora", "full_ft", "linear_probe", "cocoop", "kgcoop",
           "maple", "promptsrc", "tip_adapter", "tip_adapter_f", "bitfit", "clipfit_text_only", "clipfit_image_only"]
PRECISIONS = ["bf16", "fp16", "fp32"]
PROTOCOLS = {
    "fewshot": ["--protocol", "fewshot", "--datasets", "gpu_a"],
    "base2new": ["--protocol", "base2new", "--datasets", "gpu_a"],
    "xd": ["--protocol", "xd", "--source", "gpu_a", "--datasets", "gpu_b"],
    "dg": ["--protocol", "dg", "--source", "gpu_a", "--targets", "gpu_b"],
}


def run_matrix(workdir: Path, backbone: str, methods: list[str], precisions: list[str],
               sets: list[str] = ()) -> tuple[list, int]:
    """(table rows, failed cells) for every precision × protocol, all methods in each `bench run`."""
    from bench import cards
    from bench.cli import main
    from bench.data.synthetic import make_dataset
    from bench.results import ResultStore

    data, card_root = workdir / "data", workdir / "cards"
    make_dataset(data, card_root, "gpu_a", 6, (4, 2, 3), size=(240, 320))
    make_dataset(data, card_root, "gpu_b", 5, (4, 2, 3), size=(240, 320))
    os.environ["BENCH_CARDS_PATH"] = str(card_root)
    cards.clear_caches()
    rows, failed = [], 0
    for precision in precisions:
        for protocol, extra in PROTOCOLS.items():
            root = workdir / f"results-{precision}-{protocol}"
            argv = ["run", "--backbone", backbone, "--pretrained", "none", "--methods", ",".join(methods),
                    "--data-root", str(data), "--shots", "2", "--seeds", "1", "--results", str(root),
                    "--set", f"precision={precision}", "--set", "epochs=1", "--set", "iters_per_shot=2",
                    "--set", "batch_size=8", "--no-leaderboard", *extra]
            for setting in sets:
                argv += ["--set", setting]
            t0 = time.perf_counter()
            main(argv)
            seconds = time.perf_counter() - t0
            results = [res for _, res in ResultStore(root).iter_results()]
            bad = [f"{r['config']['method']}: {(r.get('error') or {}).get('message')}"
                   for r in results if r["status"] != "completed"]
            failed += len(bad) + max(0, len(methods) - len(results))
            devices = sorted({(r.get("cost") or {}).get("device", "?") for r in results if r["status"] == "completed"})
            rows.append([precision, protocol, f"{len(results) - len(bad)}/{len(methods)}", f"{seconds:.1f}",
                         ", ".join(devices), "; ".join(bad)[:300]])
    return rows, failed


def throughput(backbone: str, methods: list[str], classes: int, batch: int, precision: str) -> list:
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from methods_throughput import measure

    from bench.backbone import load_backbone

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args = argparse.Namespace(classes=classes, batch=batch, steps=10, warmup=3, precision=precision)
    bb = load_backbone(backbone, None)
    return [measure(m, bb, args, device) for m in methods]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="ViT-B-16")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--classes", type=int, default=100, help="throughput table: class prompts per step")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workdir", type=Path, help="keep the generated data and results here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every bench run "
                   "(e.g. cuda_graphs=true)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput table (gpu_speed.py has it)")
    args = p.parse_args()
    import torch

    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA device)"
    methods = args.methods.split(",")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-check-") as tmp:
        workdir = args.workdir or Path(tmp)
        rows, failed = run_matrix(workdir, args.backbone, methods, args.precisions.split(","), args.set)
    print(f"\n{args.backbone} (random weights) on {where}: every method × protocol × precision, a few steps each")
    print(tabulate(rows, headers=["precision", "protocol", "completed", "s", "device", "failures"],
                   tablefmt="github"))
    if not args.no_throughput:
        table = throughput(args.backbone, methods, args.classes, args.batch, "bf16")
        print(f"\nthroughput · {args.backbone} · batch {args.batch} · {args.classes} classes · bf16 · {where}")
        print(tabulate(table, headers=["method", "trainable", "images/s", "ms/step", "peak MiB"],
                       tablefmt="github"))
    print(f"\n{failed} failed cell(s); {time.perf_counter() - t0:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
