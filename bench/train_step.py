"""One optimisation step (forward, loss, backward, optimizer), eager or replayed from a CUDA graph.

Usage (the trainer builds one per cell):
    >>> step = make_step(method, optimizer, scaler, cfg, device)
    >>> loss, parts = step(images, labels)          # loss stays on the device; the host never waits for it

A ViT-B/16 training step at batch 32 launches ~1,500-2,000 small kernels: on a large GPU the step is bound by
launching them, not by arithmetic. `cuda_graphs: true` captures forward, loss and backward once the shapes are
known (a few-shot train batch is static with drop_last; the class prompts are fixed for the cell) and replays the
capture each step: one launch instead of thousands. The optimizer step (a handful of foreach kernels; its learning
rate changes per step) and gradient clipping stay eager. What cannot be captured falls back to eager steps with a
logged reason: fp16 (the GradScaler's inf checks), compile, a batch of another shape (a last partial batch), a
capture that fails (a method that syncs with the host in its forward).
"""

from __future__ import annotations

import logging

import torch

from bench.precision import autocast, autocast_dtype

logger = logging.getLogger(__name__)

WARMUP_STEPS = 3          # eager steps (on a side stream) before the capture: lazy initialisation, cuBLAS workspaces


class EagerStep:
    """forward → loss → backward → (unscale, clip) → optimizer step, under the run's autocast."""

    def __init__(self, method, optimizer, scaler, cfg, device: torch.device):
        self.method, self.optimizer, self.scaler, self.cfg, self.device = method, optimizer, scaler, cfg, device
        self.forward = torch.compile(method) if cfg.compile else method
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.amp = autocast_dtype(cfg, device)

    def losses(self, images: torch.Tensor, labels: torch.Tensor, cache: bool = True):
        with autocast(self.device, self.amp, cache=cache):
            return self.method.loss(self.forward(images).float_logits(), labels)

    def update(self) -> None:
        """Optimizer step from the gradients now in `.grad` (clipped first when the card says so)."""
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, zero_in_place: bool = False):
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        loss, parts = self.losses(images, labels)
        self.optimizer.zero_grad(set_to_none=not zero_in_place)
        self.scaler.scale(loss).backward()
        self.update()
        return loss.detach(), parts           # detached: no autograd graph outlives the step (graph capture)


class GraphedStep(EagerStep):
    """The same step with forward, loss and backward replayed from one CUDA graph (see the module docstring)."""

    def __init__(self, method, optimizer, scaler, cfg, device: torch.device):
        super().__init__(method, optimizer, scaler, cfg, device)
        self.steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple | None = None              # images, labels, loss, parts of the capture
        self.off = self._why_not()
        if self.off:
            logger.info("cuda_graphs: eager steps (%s)", self.off)

    def _why_not(self) -> str | None:
        if self.device.type != "cuda":
            return f"no CUDA device ({self.device.type})"
        if self.scaler.is_enabled():
            return "fp16's GradScaler checks for inf on the host"
        if self.cfg.compile:
            return "compile is on"
        return None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, zero_in_place: bool = False):
        if self.off:
            return super().__call__(images, labels, zero_in_place=self.graph is not None)
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        if self.graph is None:
            self.steps += 1
            if self.steps <= WARMUP_STEPS:
                return self._side_stream(images, labels)
            try:
                self._capture(images, labels)
            except Exception as err:  # noqa: BLE001  (any capture failure: the run goes on eagerly)
                self.off = f"capture failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
                logger.warning("cuda_graphs: eager steps from now on (%s)", self.off)
                self.graph, self.static = None, None
                self.optimizer.zero_grad(set_to_none=True)
                return super().__call__(images, labels)
        x, y, loss, parts = self.static
        if images.shape != x.shape or labels.shape != y.shape:       # e.g. a last partial batch: this step eager
            return super().__call__(images, labels, zero_in_place=True)
        x.copy_(images)
        y.copy_(labels)
        self.graph.replay()
        self.update()
        return loss.clone(), parts

    def _side_stream(self, images, labels):
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            out = super().__call__(images, labels)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        return out

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        x, y = images.clone(), labels.clone()
        self.optimizer.zero_grad(set_to_none=True)     # backward allocates .grad inside the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, parts = self.losses(x, y, cache=False)
            loss.backward()
        self.graph, self.static = graph, (x, y, loss.detach(), parts)
        logger.info("cuda_graphs: training step captured (batch %d)", len(images))


def make_step(method, optimizer, scaler, cfg, device: torch.device) -> EagerStep:
    """The cell's step: graphed when `cuda_graphs` is on (else, or where it cannot be, eager)."""
    return (GraphedStep if cfg.cuda_graphs else EagerStep)(method, optimizer, scaler, cfg, device)
