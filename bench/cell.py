"""Run one cell: data → method → train → evaluate → result.json (the unit every executor runs).

Usage:
    >>> from bench.cell import run_cell
    >>> result = run_cell(cell, Path("results"))      # returns the result dict; never raises for a cell's own error

A failing cell is recorded as failed (error + log path) and returned, so a sweep goes on. Training state is
checkpointed under the cell's `ckpt/` (every `ckpt_interval_s` seconds at an epoch's end); rerunning an unfinished
cell resumes from the last checkpoint.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path

import bench.mini  # noqa: F401  (registers the named weights "mini-world" that mini-world cells load)
from bench import cards
from bench.config import train_config
from bench.errors import BenchError
from bench.results import ResultStore, atomic_write, environment, remove_temp_files, utcnow
from bench.schema import SCHEMA_VERSION

logger = logging.getLogger(__name__)

MANIFEST_NAME = "fewshot_manifest.json"


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device_name(device) -> str:
    import torch

    return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


def _prepare_data(cell: dict):
    from bench.data.fewshot import base_new_split
    from bench.grid import dataset_splits, fewshot_subset

    cfg = cell["config"]
    card = cards.dataset_card(cfg["dataset"])
    splits = dataset_splits(cfg["dataset"], cell["data_root"])
    train, val, sha = [], [], None                     # shots 0 (zero-shot): nothing is drawn
    if cfg["shots"]:
        train, val, sha = fewshot_subset(cfg["dataset"], cell["data_root"], cfg["shots"], cfg["seed"])
    if cell.get("manifest_sha256") and sha != cell["manifest_sha256"]:
        raise BenchError(f"few-shot manifest of {cfg['dataset']} changed since planning (data or split file edited)")
    return card, splits, train, val, sha, base_new_split


def _write_manifest(cell: dict, run_dir: Path) -> dict | None:
    """The few-shot draw as `fewshot_manifest.json` beside result.json (canonical JSON: its sha256 is the cell's
    manifest_sha256); returns its artifact record, None for a zero-shot cell."""
    import hashlib

    from bench.data.fewshot import manifest_bytes
    from bench.grid import fewshot_draw
    from bench.results import write_bytes_atomic

    cfg = cell["config"]
    if not cfg["shots"]:
        return None
    data = manifest_bytes(fewshot_draw(cfg["dataset"], cell["data_root"], cfg["shots"], cfg["seed"])[2])
    write_bytes_atomic(run_dir / MANIFEST_NAME, data)
    return {"path": MANIFEST_NAME, "sha256": hashlib.sha256(data).hexdigest()}


def _evaluations(cell, card, splits, train, val, base_new_split):
    """(name, class names, items, dataset, template) for each of the protocol's evaluations (bench.protocols), the
    training view and the full validation split of the training classes."""
    from bench.grid import dataset_splits
    from bench.protocols import protocol

    cfg = cell["config"]
    proto = protocol(cfg["protocol"])
    if proto.class_split:
        labels_from = train or splits.train
        base = base_new_split(labels_from, val, splits.test, "base")
        new = base_new_split(labels_from, [], splits.test, "new")
        val_full = base_new_split(labels_from, splits.val, [], "base").val
        halves = {"base": base, "new": new}
        return ((base.train, base.val, base.classnames),
                [(name, halves[name].classnames, halves[name].test, card.name, card.template)
                 for name in proto.own_evals], val_full)
    evals = [(name, splits.classnames, splits.test, card.name, card.template) for name in proto.own_evals]
    for target in cfg.get("targets") or []:
        tcard = cards.dataset_card(target)
        tsplits = dataset_splits(target, cell["data_root"])
        evals.append((target, tsplits.classnames, tsplits.test, target, tcard.template))
    return (train, val, splits.classnames), evals, list(splits.val)


def _execute(cell: dict, run_dir: Path, result: dict) -> None:
    import torch

    from bench import regime
    from bench.backbone import load_cell_backbone
    from bench.checkpoint import save_tensors
    from bench.evaluator import EvalOptions, FeatureCache, evaluate, image_features
    from bench.memprobe import peak_mb
    from bench.methods import build_method
    from bench.methods.base import FitData
    from bench.precision import autocast_dtype, resolved_precision
    from bench.trainer import train as train_method

    cfg = cell["config"]
    card, splits, train, val, sha, base_new_split = _prepare_data(cell)
    if manifest := _write_manifest(cell, run_dir):
        result["artifacts"]["fewshot_manifest"] = manifest
    (train_items, val_items, train_names), evals, val_full = _evaluations(cell, card, splits, train, val,
                                                                          base_new_split)
    device = _device()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)             # each cell reports its own peak (cells share workers)
    tcfg = train_config(cfg["train"])
    bb = load_cell_backbone(cfg)                                # cached per process: may or may not draw RNG
    bb = regime.cell_backbone(bb, tcfg.precision, device)       # pure fp16 (published regime): CLIP in fp16
    torch.manual_seed(cfg["seed"])                              # so seed after it: same init in any process
    method = build_method(cfg["method"], bb, train_names, card.template, cfg["params"], dataset=card.name,
                          truncate_text=tcfg.fast).to(device)    # on the training device before any hook runs
    result["data"] = {"manifest_sha256": sha, "n_train": len(train_items), "n_val": len(val_items),
                      "n_classes": len(splits.classnames), "classes": {e[0]: len(e[1]) for e in evals}}
    cache = FeatureCache(Path(result["_root"]) / "features") if method.frozen_image_tower else None
    opts = EvalOptions(amp=autocast_dtype(tcfg, device), fast=tcfg.fast, batch_size=tcfg.test_batch_size,
                       fast_batch_size=tcfg.eval_batch_size, num_workers=tcfg.num_workers)
    result["runtime"] = {"device": _device_name(device),          # what ran (the config holds what was planned)
                         "precision": resolved_precision(tcfg, device),
                         "threads": torch.get_num_threads()}      # CPU results can move by an image with it
    fit = FitData(train_items, val_items, val_full, tcfg, device, cfg["seed"],
                  features=lambda items: image_features(method, items, device, opts, cache),
                  test=regime.test_items(cfg, evals))            # only where the settings select on the test set
    method.before_training(fit)                                  # a no-op but for data-dependent methods (Tip-Adapter)
    regime.prepare(method, tcfg)                                 # pure fp16: the official fp16 tensors
    stats = None
    if method.trains:
        stats = train_method(method, train_items, tcfg, cfg["shots"], cfg["seed"], device, run_dir / "ckpt")
        result["resumed"] = stats.resumed_from_epoch is not None
    method.after_training(fit)
    t0 = time.perf_counter()
    predictions = {}
    for name, classnames, items, dataset, template in evals:
        if not method.can_classify(classnames):       # a linear head cannot name new classes: reported as —
            result["skipped"][name] = f"{cfg['method']} cannot classify classes it was not trained on"
            continue
        if name != evals[0][0]:
            method.retarget(classnames, dataset, template)
        ev = evaluate(method, items, device, opts, cache)
        result["metrics"][name] = ev.metrics
        predictions.update({f"{name}/{k}": v for k, v in ev.predictions.items()})
        logger.info("%s %s: acc %.2f macro-F1 %.2f (n=%d)", cfg["method"], name, ev.metrics["acc"],
                    ev.metrics["macro_f1"], ev.metrics["n"])
    total = sum(p.numel() for p in method.parameters())
    result["cost"] = {"data_s": stats.data_s if stats else 0.0, "train_s": stats.train_s if stats else 0.0,
                      "eval_s": time.perf_counter() - t0, "images_per_s": stats.images_per_s if stats else 0.0,
                      "peak_mem_mb": peak_mb(device), "trainable_params": method.count_trainable(),
                      "total_params": total, "device": _device_name(device), "iters": stats.iters if stats else 0}
    result["artifacts"]["predictions"] = _save_predictions(run_dir / "predictions.npz", predictions)
    if method.trains and (method.count_trainable() < 5_000_000 or os.environ.get("BENCH_KEEP_FULL")):
        path = run_dir / "trainable.safetensors"
        save_tensors(path, method.trainable_state(), metadata={"cell_id": cell["cell_id"]})
        result["artifacts"]["trainable"] = {"path": path.name, "sha256": _sha256(path)}


def _save_predictions(path: Path, arrays: dict) -> dict:
    """Per-image predictions of every evaluation, `<eval>/<field>` → array, in one compressed npz (atomic)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(path, write)
    return {"path": path.name, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_cell(cell: dict, root: Path, force: bool = False) -> dict:
    """Run `cell` unless a completed result exists (or another process holds it); return its result."""
    store = ResultStore(root)
    if not force and store.is_completed(cell):
        return store.read(cell)
    run_dir = store.cell_dir(cell)
    with store.lock(cell) as got:
        if not got:
            return {"cell_id": cell["cell_id"], "status": "running"}
        if not force and store.is_completed(cell):
            return store.read(cell)
        remove_temp_files(run_dir)             # a killed attempt's half-written file (SIGKILL cannot clean up)
        handler = logging.FileHandler(run_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        logging.getLogger().addHandler(handler)
        if logging.getLogger().level > logging.INFO or logging.getLogger().level == logging.NOTSET:
            logging.getLogger().setLevel(logging.INFO)
        logger.info("cell started: %s", cell["cell_id"])
        result = {"schema_version": SCHEMA_VERSION, "cell_id": cell["cell_id"], "status": "running", "config": cell["config"],
                  "data": {}, "metrics": {}, "skipped": {}, "cost": {}, "env": {}, "runtime": {}, "started_at": utcnow(), "finished_at": None,
                  "resumed": False, "error": None, "artifacts": {}, "_root": str(root)}
        try:
            result["env"] = environment()
            _execute(cell, run_dir, result)
            result["status"] = "completed"
        except Exception as err:  # one failing cell never kills a sweep: record it
            logger.error("cell %s failed: %s", cell["cell_id"], err)
            logger.info("%s", traceback.format_exc())
            result["status"] = "failed"
            message = str(err).splitlines()[0] if str(err) else ""
            result["error"] = {"type": type(err).__name__, "message": message, "log": str(run_dir / "log.txt")}
        result.pop("_root", None)
        result["finished_at"] = utcnow()
        try:
            store.write_result(cell, result)
        except OSError as err:    # a full or vanished disk: nothing half-written stays; the cell reruns next time
            logger.error("cell %s: cannot write its result (%s); it stays pending", cell["cell_id"], err)
            result = {**result, "status": "failed", "error": {"type": type(err).__name__, "message": f"result "
                      f"not written: {err}", "log": str(run_dir / "log.txt")}}
        else:
            logger.info("result: %s", result["status"])
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
        if result["status"] == "completed":
            import shutil

            shutil.rmtree(run_dir / "ckpt", ignore_errors=True)
        return result
