"""The one trainer: every method trains through this loop.

Usage:
    >>> stats = train(method, train_items, cfg, shots=16, seed=1, device=torch.device("cpu"), ckpt_dir=run/"ckpt")

Conventions (as KaiyangZhou/Dassl.pytorch and MaxZanella/CLIP-LoRA run them): SGD (momentum, weight decay on
every trainable tensor, as Dassl) or AdamW; Dassl's schedule (the first `warmup_epochs` at a constant
`warmup_lr`, then cosine over the epoch budget, stepped per epoch) or a per-iteration cosine (CLIP-LoRA);
drop_last only when the set is at least one batch; mixed precision with fp32 master weights (bf16 autocast on
CUDA by default, fp32 on the CPU); only trainable tensors get gradients and optimizer state. Each epoch re-seeds the RNGs from (seed, epoch), so a run resumed
from an epoch checkpoint ends bit-identical to an uninterrupted one on the CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.checkpoint import load_state, save_state
from bench.config import TrainConfig
from bench.data.decoded import DeviceTrainSet
from bench.data.images import ImageSet, train_transform
from bench.data.splits import Item
from bench.memprobe import peak_mb, write_probe
from bench.precision import frozen_weights_in
from bench.train_step import make_step

logger = logging.getLogger(__name__)


@dataclass
class TrainStats:
    iters: int = 0
    epochs: int = 0
    images: int = 0
    train_s: float = 0.0
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    resumed_from_epoch: int | None = None
    data_s: float = 0.0           # decoding the train set (both paths decode once per cell)

    @property
    def images_per_s(self) -> float:
        return self.images / self.train_s if self.train_s > 0 else 0.0


def lr_at(cfg: TrainConfig, epoch: int, it: int, total_epochs: int, total_iters: int) -> float:
    """Learning rate for iteration `it` (global) in `epoch`."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "dassl_cosine":
        if epoch < cfg.warmup_epochs:
            return cfg.warmup_lr
        t = epoch - cfg.warmup_epochs
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t / total_epochs))
    if cfg.schedule == "cosine_iter":
        if it < cfg.warmup_iters:
            return cfg.lr * (it + 1) / cfg.warmup_iters
        span = max(total_iters - cfg.warmup_iters, 1)
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * (it - cfg.warmup_iters) / span))
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def drops_last(cfg: TrainConfig, n_items: int) -> bool:
    """Dassl ("auto") drops the last partial batch only when the set holds at least one full batch, so a tiny set
    still gives one (short) batch per epoch; CLIP-LoRA's loader keeps it (false)."""
    if cfg.drop_last == "auto":
        return n_items >= cfg.batch_size
    return bool(cfg.drop_last)


def budget(cfg: TrainConfig, shots: int, n_items: int) -> tuple[int, int, int]:
    """(iterations per epoch, total iterations, total epochs)."""
    per_epoch = n_items // cfg.batch_size if drops_last(cfg, n_items) else math.ceil(n_items / cfg.batch_size)
    per_epoch = max(per_epoch, 1)
    total_iters = cfg.total_iters(shots, per_epoch)
    return per_epoch, total_iters, math.ceil(total_iters / per_epoch)


def make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter], **options) -> torch.optim.Optimizer:
    """The card's optimizer over `params`; `options` are a method's extra arguments (Tip-Adapter-F's AdamW eps)."""
    options = {"foreach": True, **options}            # one kernel per update for all tensors (the CPU default loops)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **options)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, **options)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd | adamw)")


class DivergedError(RuntimeError):
    """A non-finite loss or trainable tensor: the cell fails instead of reporting chance accuracy."""


class LossWatch:
    """Keeps each step's loss on the device and reads the losses back rarely (every `READ_EVERY_S` seconds at an
    epoch's end, every `READ_EVERY_STEPS` steps within a long epoch, at checkpoints and at the end): the host waits
    for the device only then. A read also checks every trainable tensor at once (one max-abs per tensor,
    foreach); a non-finite loss or tensor fails the cell naming the first step it came from."""

    READ_EVERY_S = 10.0
    READ_EVERY_STEPS = 1000

    def __init__(self, stats: TrainStats, cfg: TrainConfig, params: dict[str, torch.nn.Parameter]):
        self.stats, self.cfg, self.params = stats, cfg, params
        self.pending: list[tuple[torch.Tensor, int, int]] = []
        self.last_read = time.perf_counter()

    def push(self, loss: torch.Tensor, epoch: int, it: int) -> None:
        self.pending.append((loss.detach(), epoch, it))

    def due(self) -> bool:
        return time.perf_counter() - self.last_read >= self.READ_EVERY_S or len(self.pending) >= self.READ_EVERY_STEPS

    def read(self) -> None:
        """Read the pending losses and check the trainable tensors (one host sync)."""
        self.last_read = time.perf_counter()
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        values = torch.stack([loss.float() for loss, _, _ in pending]).cpu().tolist()
        for value, (_, epoch, it) in zip(values, pending):
            if not math.isfinite(value):
                raise DivergedError(_diverged(f"loss is {value}", epoch, it, self.cfg, self.stats.last_loss))
            if math.isnan(self.stats.first_loss):
                self.stats.first_loss = value
            self.stats.last_loss = value
        names = list(self.params)
        if names:
            peaks = torch.stack(torch._foreach_norm(list(self.params.values()), float("inf"))).cpu()
            bad = next((n for n, ok in zip(names, torch.isfinite(peaks).tolist()) if not ok), None)
            if bad is not None:
                _, epoch, it = pending[-1]
                raise DivergedError(_diverged(f"trainable tensor {bad} is not finite", epoch, it, self.cfg,
                                              self.stats.last_loss))


class CheckpointClock:
    """When to write training state: at an epoch end every `ckpt_every` epochs once `ckpt_interval_s` seconds have
    passed since the last write (few-shot epochs are one or two steps: per-epoch writes would be most of a cell),
    and at `stop_after_epoch` (a run stopped on purpose resumes from there)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg, self.last = cfg, time.perf_counter()

    def due(self, epoch: int, stop_after_epoch: int | None) -> bool:
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return True
        return epoch % max(self.cfg.ckpt_every, 1) == 0 and time.perf_counter() - self.last >= self.cfg.ckpt_interval_s

    def written(self) -> None:
        self.last = time.perf_counter()


def _batches(data, cfg: TrainConfig, drop_last: bool, gen: torch.Generator):
    """(images, labels) batches in the sampler's order. Both paths shuffle with the same sampler and draw each
    item's augmentation from the global RNG in the same order, so they see the same crops and flips."""
    if isinstance(data, DeviceTrainSet):
        order = torch.utils.data.DataLoader(range(len(data)), batch_size=cfg.batch_size, shuffle=True,
                                            drop_last=drop_last, generator=gen)
        return (data.batch(idx.tolist()) for idx in order)
    return torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last,
                                       generator=gen, num_workers=cfg.num_workers)


def _diverged(what: str, epoch: int, it: int, cfg: TrainConfig, last: float) -> str:
    return (f"training diverged: {what} at epoch {epoch + 1}, iteration {it + 1} (precision {cfg.precision}, "
            f"lr {cfg.lr:g}; last finite loss {last:.4g})")


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    torch.manual_seed(seed * 1_000_003 + epoch)
    return torch.Generator().manual_seed(seed * 7_919 + epoch)


def train(method, items: list[Item], cfg: TrainConfig, shots: int, seed: int, device: torch.device,
          ckpt_dir: Path | None = None, stop_after_epoch: int | None = None,
          on_epoch: Callable[[int], None] | None = None) -> TrainStats:
    """Train `method` in place on `items`; checkpoint after epochs (see CheckpointClock); resume from `ckpt_dir`
    when it holds state. The method is on `device` already when the cell calls this (its hooks ran there)."""
    bb = method.backbone
    t_data = time.perf_counter()
    if cfg.fast:
        data = DeviceTrainSet(items, bb.image_size, bb.mean, bb.std, cfg.rrc_scale, device)
    else:
        data = ImageSet(items, train_transform(bb.image_size, bb.mean, bb.std, cfg.rrc_scale), preload=True)
    drop_last = drops_last(cfg, len(data))
    per_epoch, total_iters, total_epochs = budget(cfg, shots, len(data))
    method.to(device)
    trainable = method.trainable_parameters()
    optimizer = make_optimizer(cfg, list(trainable.values()), **method.optimizer_options())
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    stats = TrainStats(data_s=time.perf_counter() - t_data)
    start_epoch, it = 0, 0
    if ckpt_dir is not None:
        meta = load_state(ckpt_dir, method, optimizer)
        if meta is not None:
            start_epoch, it = meta["epoch"], meta["iter"]
            if meta.get("grad_scaler"):                            # fp16: the loss scale it had reached
                scaler.load_state_dict(meta["grad_scaler"])
            stats.resumed_from_epoch = start_epoch
            logger.info("resumed from epoch %d (iteration %d)", start_epoch, it)
    start_it = it
    step = make_step(method, optimizer, scaler, cfg, device)
    watch, clock = LossWatch(stats, cfg, trainable), CheckpointClock(cfg)
    parts: dict[str, torch.Tensor] = {}
    t0 = time.perf_counter()
    with frozen_weights_in(method, step.amp):                    # frozen weights cast once, not every step
        for epoch in range(start_epoch, total_epochs):
            method.train()
            gen = _seed_epoch(seed, epoch)
            for images, labels in _batches(data, cfg, drop_last, gen):
                if it >= total_iters:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(cfg, epoch, it, total_epochs, total_iters)
                loss, parts = step(images, labels)
                if it == start_it:                                    # for packing (no host sync)
                    write_probe(peak_mb(device))
                watch.push(loss, epoch, it)
                if len(watch.pending) >= watch.READ_EVERY_STEPS:     # long epochs (ImageNet): read within them too
                    watch.read()
                stats.images += len(labels)
                it += 1
            stats.epochs = epoch + 1
            method.on_epoch_end(epoch + 1, total_epochs)                  # epoch schedules (PromptSRC's GPA)
            save = ckpt_dir is not None and clock.due(epoch + 1, stop_after_epoch)
            if save or watch.due() or epoch + 1 == total_epochs:
                watch.read()
                logger.info("epoch %d/%d it %d/%d loss %.4f lr %.2e %s", epoch + 1, total_epochs, it, total_iters,
                            stats.last_loss, optimizer.param_groups[0]["lr"],
                            " ".join(f"{k} {float(v):.4f}" for k, v in parts.items()))
            if save:
                save_state(ckpt_dir, method.trainable_state(), optimizer,
                           {"epoch": epoch + 1, "iter": it, "grad_scaler": scaler.state_dict()},
                           extra=method.extra_state())
                clock.written()
            if on_epoch is not None:
                on_epoch(epoch + 1)
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
        watch.read()
    stats.iters = it
    stats.train_s = time.perf_counter() - t0
    method.eval()
    return stats
