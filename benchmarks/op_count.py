"""Operations one training step dispatches, counted through the real cell flow (`bench run`) on the CPU.

Usage:
    python benchmarks/op_count.py                                   # clipfit, coop, lora on ViT-B-16, bf16 autocast
    python benchmarks/op_count.py --methods clipfit --backbone bench-tiny --precision fp32
    python benchmarks/op_count.py --json counts.json                # also write the per-op counts

A GPU step that launches ~2,000 small kernels is bound by launching them, not by arithmetic; every aten operation
the step dispatches is (at least) one launch there. This runs one cell per method with a TorchDispatchMode active
only inside the trainer, reads the count at each epoch boundary, and reports the mean of the epochs after the first (the
1st creates optimizer state; the crops' rejection sampling makes epochs differ by a few scalar reads). The cell is laid out so an epoch is exactly one step (32 classes × 1 shot = one batch of
32, as a 1-shot epoch of a small dataset is; LoRA's budget is iters_per_shot × K = the same number of steps), so the count includes what each epoch adds: schedule, loss watch,
finiteness check, checkpoint. Views (reshapes, slices, transposes, detach) are not counted: they launch nothing.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CATEGORIES = {
    "dtype casts": ("_to_copy", "to"),
    "copies": ("copy_", "_copy_from", "_copy_from_and_resize"),
    "clones": ("clone",),
    "scalar reads": ("_local_scalar_dense", "item"),
    "foreach (optimizer)": ("_foreach_",),
}


def category(name: str) -> str:
    for label, prefixes in CATEGORIES.items():
        if any(name == p or (p.endswith("_") and name.startswith(p)) for p in prefixes):
            return label
    return "other"


def count_cell(method: str, backbone: str, precision: str, epochs: int, workdir: Path) -> list[collections.Counter]:
    """Per-epoch Counters of aten ops (views excluded) of one `bench run` cell of `method`."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from bench import trainer
    from bench.cli import main as bench

    per_epoch: list[collections.Counter] = []

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:
                self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    real_train = trainer.train

    def counted_train(*args, **kwargs):
        mode = Count()

        def on_epoch(epoch: int) -> None:
            per_epoch.append(mode.ops.copy())
            mode.ops.clear()

        with mode:
            return real_train(*args, **kwargs, on_epoch=on_epoch)

    trainer.train = counted_train
    try:
        argv = ["run", "--backbone", backbone, "--pretrained", "none", "--methods", method, "--datasets", "opcount",
                "--data-root", str(workdir / "data"), "--shots", "1", "--seeds", "1", "--results",
                str(workdir / f"results-{method}-{time.time_ns()}"), "--no-leaderboard",
                "--set", f"precision={precision}", "--set", f"epochs={epochs}", "--set", f"iters_per_shot={epochs}",
                "--set", "batch_size=32"]
        if bench(argv) != 0:
            sys.exit(f"the {method} cell failed")
    finally:
        trainer.train = real_train
    return per_epoch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="ViT-B-16")
    p.add_argument("--methods", default="clipfit,coop,lora")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--epochs", type=int, default=3, help="epochs of one step each (the mean after the 1st is reported)")
    p.add_argument("--json", type=Path, help="write {method: {op: count}} of the reported epoch here")
    args = p.parse_args()
    from tabulate import tabulate

    from bench import cards
    from bench.data.synthetic import make_dataset

    work = Path(tempfile.mkdtemp(prefix="bench-opcount-"))
    make_dataset(work / "data", work / "cards", "opcount", 32, (1, 1, 1), size=(240, 320))
    os.environ["BENCH_CARDS_PATH"] = str(work / "cards")
    os.environ["BENCH_DECODE_CACHE"] = str(work / "decoded")
    cards.clear_caches()
    rows, dump = [], {}
    for method in args.methods.split(","):
        epochs = count_cell(method, args.backbone, args.precision, args.epochs, work)
        steady = collections.Counter()
        for epoch in epochs[1:] or epochs:                      # the mean of the epochs after the first
            steady.update(epoch)
        steady = collections.Counter({k: round(v / len(epochs[1:] or epochs)) for k, v in steady.items()})
        cats = collections.Counter()
        for name, n in steady.items():
            cats[category(name)] += n
        dump[method] = dict(steady.most_common())
        rows.append([method, sum(steady.values()), *(cats[c] for c in CATEGORIES), cats["other"],
                     " / ".join(str(sum(e.values())) for e in epochs)])
    print(f"\nops dispatched by one training step (one-step epochs, views excluded) · {args.backbone} · "
          f"{args.precision} autocast · through `bench run` on the CPU")
    print(tabulate(rows, headers=["method", "ops", *CATEGORIES, "other", "per epoch"], tablefmt="github"))
    if args.json:
        args.json.write_text(json.dumps(dump, indent=1))


if __name__ == "__main__":
    main()
