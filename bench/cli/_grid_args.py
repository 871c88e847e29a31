"""Grid arguments shared by `bench plan` and `bench run`, and their resolution into a Grid (no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

import bench.mini  # noqa: F401  (registers the named weights "mini-world")
from bench import cards
from bench.config import parse_sets
from bench.errors import BenchError
from bench.grid import Grid, check_grid
from bench.protocols import DEFAULT as DEFAULT_PROTOCOL
from bench.protocols import NAMES as PROTOCOLS
from bench.protocols import protocol as protocol_named
from bench.regime import REGIMES

DEFAULT_METHODS = "zeroshot,clipfit,coop,clip_adapter,lora,full_ft,linear_probe"


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_grid_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("grid")
    g.add_argument("--methods", type=name_list, help=f"comma-separated (default: {DEFAULT_METHODS})")
    g.add_argument("--datasets", type=name_list, help="comma-separated dataset cards (default: the suite's)")
    g.add_argument("--suite", help="named dataset suite: coop11, imagenet_variants, mini (default: mini)")
    g.add_argument("--shots", type=int_list, help="few-shot K values (default: 1,2,4,8,16; base2new/xd/dg: 16)")
    g.add_argument("--seeds", type=int_list, help="seeds (default: 1,2,3)")
    g.add_argument("--protocol", choices=PROTOCOLS, help=f"{' | '.join(PROTOCOLS)} (default: {DEFAULT_PROTOCOL})")
    g.add_argument("--source", help="xd/dg: training dataset (default: imagenet)")
    g.add_argument("--targets", type=name_list, help="xd/dg: evaluated datasets")
    g.add_argument("--backbone", help="open_clip architecture (ViT-B-16), a JSON architecture file, local-dir:DIR or "
                                      "hf-hub:org/repo (default: the suite's)")
    g.add_argument("--pretrained", help="open_clip tag (openai) or a local .pt/.pth/.bin/.safetensors file "
                                        "(OpenAI's TorchScript releases too)")
    g.add_argument("--activation", choices=["auto", "quick_gelu", "gelu"],
                   help="MLP activation; auto (default) follows the weights: QuickGELU for OpenAI's")
    g.add_argument("--data-root", help="folder holding the CoOp-layout dataset folders ($DATA)")
    g.add_argument("--regime", choices=REGIMES,
                   help="default (bench's numerics, validation-only selection) | published (each method as its "
                        "official code ran: pure fp16, test-set selection where it did; rows are marked)")
    g.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                   help="override a hyperparameter for every cell, e.g. --set epochs=5 --set lam=4")
    g.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="the device the cells are planned for, which `precision: auto` resolves by (bf16 on cuda, "
                        "fp32 on cpu); auto: a GPU for SLURM profiles with GPUs and --gpus, else this machine's")
    g.add_argument("--config", type=Path, help="grid YAML (keys as the flags above); flags override it")
    g.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")


GRID_KEYS = {"methods": "names", "datasets": "names", "targets": "names", "shots": "ints", "seeds": "ints",
             "suite": "str", "protocol": "str", "source": "str", "backbone": "str", "pretrained": "str",
             "activation": "str", "data_root": "str", "set": "mapping", "regime": "str"}


def read_grid_file(path: Path) -> dict:
    """A --config grid file: its keys are the flags', each checked for its type (one-line errors)."""
    conf = cards.load_yaml(path) or {}
    if not isinstance(conf, dict):
        raise BenchError(f"grid file {path} must be a YAML mapping of grid keys, got {type(conf).__name__}")
    unknown = sorted(set(conf) - set(GRID_KEYS))
    if unknown:
        raise BenchError(f"grid file {path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(GRID_KEYS))}")
    out = {}
    for key, value in conf.items():
        kind = GRID_KEYS[key]
        if value is None:
            continue
        if kind == "names" and isinstance(value, str):
            value = name_list(value)
        elif kind == "ints" and isinstance(value, (str, int)) and not isinstance(value, bool):
            try:
                value = int_list(str(value))
            except argparse.ArgumentTypeError:
                pass
        ok = {"names": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
              "ints": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
              "str": lambda v: isinstance(v, str), "mapping": lambda v: isinstance(v, dict)}[kind]
        if not ok(value):
            want = {"names": "a list of names (or 'a,b')", "ints": "a list of integers (or '1,2')", "str": "a string",
                    "mapping": "a mapping of setting names to values"}[kind]
            raise BenchError(f"grid file {path}: '{key}' must be {want}, got {value!r}")
        out[key] = value
    if out.get("protocol", DEFAULT_PROTOCOL) not in PROTOCOLS:
        from bench.errors import did_you_mean

        raise did_you_mean(f"grid file {path}: protocol", out["protocol"], PROTOCOLS)
    return out


def build_grid(args: argparse.Namespace, prepare_world: bool, before_data=None) -> Grid:
    """Merge --config YAML and flags; fill defaults from the suite (the mini world when nothing is given).

    Every check of names, flags and settings (`check_grid`, then `before_data`: the caller's own, e.g. the results
    root) runs before the data root is demanded or the mini world is built or waited for."""
    conf = read_grid_file(args.config) if args.config else {}

    def pick(name, key=None):
        value = getattr(args, name, None)            # (a Namespace from code may lack newer flags)
        return value if value is not None else conf.get(key or name)

    as_list = lambda v: name_list(v) if isinstance(v, str) else v  # noqa: E731
    named = as_list(pick("datasets")) or []
    mini_only = bool(named) and set(named) <= set(cards.suite("mini")["datasets"])     # mini datasets imply the world
    real = any(pick(k) for k in ("backbone", "data_root", "suite")) or (bool(named) and not mini_only)
    suite_name = pick("suite") or (None if real else "mini")
    suite = cards.suite(suite_name) if suite_name else {}
    protocol = protocol_named(pick("protocol") or DEFAULT_PROTOCOL)
    data_root = pick("data_root") or suite.get("data_root")
    backbone = pick("backbone") or suite.get("backbone") or "ViT-B-16"
    pretrained = pick("pretrained") or suite.get("pretrained")
    if pretrained is None and not backbone.startswith(("local-dir:", "hf-hub:")) and not backbone.endswith(".json"):
        pretrained = "openai"
    activation = pick("activation")
    device, device_reason = target_device(args)
    grid = Grid(
        methods=as_list(pick("methods") or suite.get("methods") or DEFAULT_METHODS),
        datasets=as_list(pick("datasets") or suite.get("datasets") or []),
        shots=as_list(pick("shots") or (suite.get("shots") if protocol.suite_shots else None)
                      or list(protocol.default_shots)),
        seeds=as_list(pick("seeds") or suite.get("seeds") or [1, 2, 3]),
        protocol=protocol.name,
        backbone=backbone, pretrained=pretrained, activation=None if activation == "auto" else activation,
        data_root=data_root or "", suite=suite_name, sets=parse_sets(args.sets), file_sets=conf.get("set", {}),
        device=device, device_reason=device_reason,
        source=pick("source") or suite.get("source"), targets=as_list(pick("targets") or suite.get("targets")),
        regime=pick("regime") or "default",
    )
    check_grid(grid)
    if before_data is not None:
        before_data(grid)
    if data_root == "mini-world":
        grid.data_root = str(mini_data_root(build=prepare_world))
    elif data_root is None:
        raise BenchError("--data-root is required with --backbone/--datasets (or use --suite mini)")
    return grid


def target_device(args: argparse.Namespace) -> tuple[str, str]:
    """(cuda | cpu, why) the grid's cells are planned for (bench.device_target)."""
    from bench.device_target import planned_device

    executor = getattr(args, "executor", "local")
    gpus = None
    if executor == "slurm" and getattr(args, "device", "auto") == "auto":
        from bench.profiles import slurm_options

        gpus = slurm_options(getattr(args, "profile", None),
                             gpus_per_node=getattr(args, "gpus_per_node", None)).gpus_per_node
    return planned_device(getattr(args, "device", "auto"), executor, gpus, local_gpus=bool(getattr(args, "gpus", None)))


def mini_data_root(build: bool) -> Path:
    from bench.mini.world import ensure_world, find_world

    if build:
        return ensure_world(progress=lambda msg: print(f"[mini world] {msg}", flush=True)).data_root
    world = find_world()
    if world is None:
        raise BenchError("the mini world is not built yet: `bench world` (or `bench run`) builds it")
    return world.data_root
