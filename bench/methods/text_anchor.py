"""The text-anchor regulariser of ClipFit, KgCoOp and full fine-tuning: keep the tuned class text features near
references taken from the untouched model.

Usage (in a method):
    >>> def capture_references(self):
    ...     self.register_buffer("text_anchor", unit_rows(self.compute_text_features()), persistent=False)
    >>> def loss(self, out, labels):
    ...     return anchored_loss(out, labels, self.text_anchor, self.p.lam, "reg")

distance = 1 − mean_c cos(t_c, a_c) over the C classes (not the batch), t_c the features the logits used and a_c
the unit-norm anchor; loss = CE + weight · distance. ClipFit (minglllli/CLIPFit trainers/ClipFit.py) anchors to
the frozen model's features of its own prompts; KgCoOp (htyao89/KgCoOp trainers/kgcoop.py) to the frozen model's
features of the hand-crafted template, and writes its weight on this same (1 − cos) (see bench/methods/kgcoop.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.methods.base import Output


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """(C, D) features → the anchor: each row L2-normalised."""
    return F.normalize(features, dim=-1)


def anchor_distance(text: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """1 − mean cosine between (C, D) text features and the unit-norm (C, D) anchor (0 when they agree)."""
    return 1.0 - (F.normalize(text, dim=-1) * anchor).sum(-1).mean()


def anchored_loss(out: Output, labels: torch.Tensor, anchor: torch.Tensor, weight: float,
                  part: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CE + weight · anchor distance, with both terms in the log parts (the distance under `part`)."""
    ce = F.cross_entropy(out.logits, labels)
    distance = anchor_distance(out.text, anchor)
    return ce + weight * distance, {"ce": ce.detach(), part: distance.detach()}
