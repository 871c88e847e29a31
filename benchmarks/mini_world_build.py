"""Time a full mini-world build from scratch and print zero-shot accuracy per mini dataset (with chance level).

Usage:
    python benchmarks/mini_world_build.py                    # build into a fresh temp cache, zero-shot table
    python benchmarks/mini_world_build.py --finetune         # + the quick ClipFit check (16 shots, base/new)
    python benchmarks/mini_world_build.py --cache ~/.cache/bench --seed 0   # reuse/build a given cache

Also reports zero-shot accuracy on the train images under bench's train augmentation at the default Dassl crop
(RandomResizedCrop scale 0.08-1) and at the mini suite's crop (suites.yaml `mini.input.rrc_scale`), the final
pretraining loss, and the world's content hashes against bench's reference ones (bench/mini/reference.json; the
JSON entry to paste there after a deliberate change of the world).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, help="cache dir (default: a fresh temporary one, i.e. a full build)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune", action="store_true", help="also run the quick 16-shot ClipFit check")
    args = p.parse_args()

    from bench import cards
    from bench.errors import BenchError
    from bench.mini.probe import finetune_check, zero_shot_table
    from bench.mini.reference import check, report
    from bench.mini.world import MANIFEST, BuildConfig, ensure_world

    suite_scale = tuple(cards.suite("mini").get("input", {}).get("rrc_scale", (0.08, 1.0)))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        world = ensure_world(args.cache or Path(tmp), seed=args.seed, progress=lambda m: print(f"  {m}", flush=True))
        build_s = time.time() - t0
        zs = zero_shot_table(world)
        train = zero_shot_table(world, "train")
        aug_dassl = zero_shot_table(world, "train", (0.08, 1.0))
        aug_suite = zero_shot_table(world, "train", suite_scale)
        print(f"\nmini world (seed {args.seed}) ready in {build_s:.1f}s at {world.root}\n")
        head = f"{'dataset':15s} {'classes':>7s} {'chance':>6s} {'zs test':>7s} | {'train':>6s} {'rrc.08':>6s} " \
               f"{'rrc' + str(suite_scale[0]):>7s}"
        print(head + "\n" + "-" * len(head))
        rows = []
        for name in world.datasets:
            acc, chance = zs[name]
            rows.append((acc, chance))
            print(f"{name:15s} {round(100 / chance):7d} {chance:6.1f} {acc:7.2f} | {train[name][0]:6.1f} "
                  f"{aug_dassl[name][0]:6.1f} {aug_suite[name][0]:7.1f}")
        mean = lambda t: sum(t[n][0] for n in world.datasets) / len(world.datasets)  # noqa: E731
        print(f"{'mean':15s} {'':7s} {sum(c for _, c in rows) / len(rows):6.1f} {mean(zs):7.2f} | {mean(train):6.1f} "
              f"{mean(aug_dassl):6.1f} {mean(aug_suite):7.1f}")
        manifest = json.loads((world.root / MANIFEST).read_text())
        print(f"\nfinal pretraining loss {manifest['final_loss']:.3f}; built with "
              + ", ".join(f"{k} {v}" for k, v in manifest["versions"].items()) + f"; numerics {manifest['numerics']}")
        try:
            print("\n".join(report(check(world.root, args.seed, BuildConfig()))))
        except BenchError as err:
            print(f"no comparison: {err}")
        entry = {"content": manifest["content"], "final_loss": manifest["final_loss"]}
        print(f"reference.json entry:\n{json.dumps({world.root.name: entry}, indent=2)}")
        if args.finetune:
            print(f"\nClipFit check: 16 shots of base classes, image LNs + text c_proj biases, rrc {suite_scale}")
            print(f"{'dataset':15s} {'base zs':>7s} {'base ft':>7s} {'gain':>6s} {'new zs':>7s} {'new ft':>7s}")
            gains = []
            for name in world.datasets:
                r = finetune_check(world, name, rrc_scale=suite_scale)
                gains.append(r["base_ft"] - r["base_zs"])
                print(f"{name:15s} {r['base_zs']:7.1f} {r['base_ft']:7.1f} {gains[-1]:+6.1f} {r['new_zs']:7.1f} "
                      f"{r['new_ft']:7.1f}")
            print(f"{'mean gain':15s} {'':7s} {'':7s} {sum(gains) / len(gains):+6.1f}")


if __name__ == "__main__":
    main()
