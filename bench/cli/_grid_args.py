"""Grid arguments shared by `bench plan` and `bench run`, and their resolution into a Grid (no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import cards
from bench.config import parse_sets
from bench.errors import BenchError
from bench.grid import PROTOCOLS, Grid

DEFAULT_SHOTS = {"fewshot": [1, 2, 4, 8, 16], "base2new": [16], "xd": [16], "dg": [16]}
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
    g.add_argument("--protocol", choices=PROTOCOLS, help="fewshot | base2new | xd | dg (default: fewshot)")
    g.add_argument("--source", help="xd/dg: training dataset (default: imagenet)")
    g.add_argument("--targets", type=name_list, help="xd/dg: evaluated datasets")
    g.add_argument("--backbone", help="open_clip architecture (ViT-B-16), a JSON architecture file, local-dir:DIR or "
                                      "hf-hub:org/repo (default: the suite's)")
    g.add_argument("--pretrained", help="open_clip tag (openai) or a local .pt/.pth/.bin/.safetensors file "
                                        "(OpenAI's TorchScript releases too)")
    g.add_argument("--activation", choices=["auto", "quick_gelu", "gelu"],
                   help="MLP activation; auto (default) follows the weights: QuickGELU for OpenAI's")
    g.add_argument("--data-root", help="folder holding the CoOp-layout dataset folders ($DATA)")
    g.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                   help="override a hyperparameter for every cell, e.g. --set epochs=5 --set lam=4")
    g.add_argument("--config", type=Path, help="grid YAML (keys as the flags above); flags override it")
    g.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")


def build_grid(args: argparse.Namespace, prepare_world: bool) -> Grid:
    """Merge --config YAML and flags; fill defaults from the suite (the mini world when nothing is given)."""
    conf = {}
    if args.config:
        conf = cards.load_yaml(args.config) or {}
        valid = {"methods", "datasets", "suite", "shots", "seeds", "protocol", "source", "targets", "backbone",
                 "pretrained", "activation", "data_root", "set"}
        unknown = sorted(set(conf) - valid)
        if unknown:
            raise BenchError(f"grid file {args.config}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")

    def pick(name, key=None):
        value = getattr(args, name)
        return value if value is not None else conf.get(key or name)

    as_list = lambda v: name_list(v) if isinstance(v, str) else v  # noqa: E731
    real = any(pick(k) for k in ("backbone", "datasets", "data_root", "suite"))
    suite_name = pick("suite") or (None if real else "mini")
    suite = cards.suite(suite_name) if suite_name else {}
    protocol = pick("protocol") or "fewshot"
    data_root = pick("data_root") or suite.get("data_root")
    if data_root == "mini-world":
        data_root = str(mini_data_root(build=prepare_world))
    if data_root is None:
        raise BenchError("--data-root is required with --backbone/--datasets (or use --suite mini)")
    backbone = pick("backbone") or suite.get("backbone") or "ViT-B-16"
    pretrained = pick("pretrained") or suite.get("pretrained")
    if pretrained is None and not backbone.startswith(("local-dir:", "hf-hub:")) and not backbone.endswith(".json"):
        pretrained = "openai"
    activation = pick("activation")
    sets = parse_sets(args.sets)
    sets = {**parse_sets([f"{k}={v}" for k, v in (conf.get("set") or {}).items()]), **sets}
    return Grid(
        methods=as_list(pick("methods") or suite.get("methods") or DEFAULT_METHODS),
        datasets=as_list(pick("datasets") or suite.get("datasets") or []),
        shots=as_list(pick("shots") or (suite.get("shots") if protocol == "fewshot" else None)
                      or DEFAULT_SHOTS[protocol]),
        seeds=as_list(pick("seeds") or suite.get("seeds") or [1, 2, 3]),
        protocol=protocol,
        backbone=backbone, pretrained=pretrained, activation=None if activation == "auto" else activation,
        data_root=data_root, suite=suite_name, sets=sets,
        source=pick("source") or suite.get("source"), targets=as_list(pick("targets") or suite.get("targets")),
    )


def mini_data_root(build: bool) -> Path:
    from bench.mini.world import ensure_world, find_world

    if build:
        return ensure_world(progress=lambda msg: print(f"[mini world] {msg}", flush=True)).data_root
    world = find_world()
    if world is None:
        raise BenchError("the mini world is not built yet: `bench world` (or `bench run`) builds it")
    return world.data_root
