"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022, arXiv 2207.09519): a key-value cache of few-shot features.

Usage:
    $ bench run --methods tip_adapter,tip_adapter_f --shots 1,2,4,8,16
    $ bench run --methods tip_adapter --set search_on=val      # search on the few-shot validation draw instead

As the official code (gaopengcuhk/Tip-Adapter main.py, utils.py, configs/*.yaml):
- cache: keys = the frozen image features of the K-shot training images, each averaged over `augment_views` (10)
  augmented views (RandomResizedCrop scale 0.5–1 and flip, the card's rrc_scale) and then L2-normalised; values =
  one-hot labels (N·K × C);
- logits = exp(logit_scale) · f̂ Wᵀ + α · exp(−β (1 − f̂ Kᵀ)) V, with W the normalised zero-shot classifier (the
  dataset's template; ImageNet: the mean of CoOp's 7 templates, each normalised) and f̂ the normalised test feature;
- β, α: a grid search after training, β over `search_step[0]` values from 0.1 up to `search_scale[0]`, α likewise,
  on the whole validation split of the training classes (`search_on: val_full`, as the official code for every
  dataset but ImageNet, which has no validation split: there the card's init values stay; the official ImageNet
  script searches on the test set); the first best pair in the code's order (β outer, α inner) wins;
- Tip-Adapter-F trains the keys (N·K × D) with AdamW (lr 1e-3, eps 1e-4), per-iteration cosine, batch 256, 20 epochs
  (EuroSAT 100) at the init β, α, then searches. Its official script picks the epoch with the best test accuracy;
  bench keeps the last epoch (no test-set selection) and says so in the card.
The cache holds the training classes only: base-to-new "new" and cross-dataset targets with other classes are
skipped; a subset of the training classes (ImageNet-A/R) uses the matching columns of V.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbone import encode_text
from bench.errors import BenchError
from bench.methods.base import IMAGENET_TEMPLATES_SELECT, FitData, Method

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Params:
    init_beta: float = 1.0                  # β before the search (and while Tip-Adapter-F trains)
    init_alpha: float = 1.17                # α likewise
    search_scale: tuple = (7.0, 3.0)        # largest β, α of the grid
    search_step: tuple = (200, 20)          # grid sizes for β, α
    search_on: str = "val_full"             # val_full (official) | val (the few-shot draw) | none (keep init)
                                            # | test (the official ImageNet script; the published regime there)
    select_epoch_on: str = "last"           # Tip-Adapter-F: last | test (the official script; published regime)
    augment_views: int = 10                 # augmented passes averaged into each key
    cache_batch: int = 256                  # images per encoding batch while the cache is built
    ensemble_datasets: tuple = ("imagenet",)   # datasets classified with CoOp's 7-template ensemble
    adam_eps: float = 1e-4                  # Tip-Adapter-F's AdamW eps
    templates: dict = field(default_factory=dict)


# Params ranges, checked before any cell runs (bench.settings reads them without importing this file)
LIMITS = {"init_beta": "(0, inf)", "init_alpha": "[0, inf)", "search_on": ["val_full", "val", "none", "test"],
          "select_epoch_on": ["last", "test"],
          "augment_views": "[1, inf)", "cache_batch": "[1, inf)", "adam_eps": "(0, inf)"}


@torch.no_grad()
def augmented_features(method: Method, items: list, data: FitData, views: int, batch: int) -> torch.Tensor:
    """(views, N, D) fp32 frozen image features of `items` under the training augmentation, in item order."""
    from bench.data.decoded import DeviceTrainSet
    from bench.data.images import ImageSet, train_transform
    from bench.precision import autocast, autocast_dtype

    bb, cfg, device = method.backbone, data.cfg, data.device
    torch.manual_seed(data.seed)                                   # the crops and flips are drawn from this RNG
    if cfg.fast:
        train = DeviceTrainSet(items, bb.image_size, bb.mean, bb.std, cfg.rrc_scale, device)
        batches = lambda: (train.batch(list(range(i, min(i + batch, len(items))))) for i in range(0, len(items), batch))  # noqa: E731
    else:
        train = ImageSet(items, train_transform(bb.image_size, bb.mean, bb.std, cfg.rrc_scale), preload=True)
        batches = lambda: torch.utils.data.DataLoader(train, batch_size=batch, shuffle=False)  # noqa: E731
    out = []
    with autocast(device, autocast_dtype(cfg, device)):
        for _ in range(views):
            out.append(torch.cat([method.clip.encode_image(x.to(device)).float() for x, _ in batches()]))
    return torch.stack(out)


class TipAdapter(Method):
    """Training-free: the cache is built from the few-shot images, β and α are searched on validation."""

    name = "tip_adapter"
    Params = Params
    trains = False
    frozen_image_tower = True
    frozen_text_tower = True
    supports_new_classes = False
    learn_keys = False

    def setup(self) -> None:
        dim = self.clip.visual.output_dim
        if self.learn_keys:
            self.cache_keys = nn.Parameter(torch.zeros(0, dim))
        else:
            self.register_buffer("cache_keys", torch.zeros(0, dim))
        self.register_buffer("cache_values", torch.zeros(0, len(self.trained_classnames)))
        self.register_buffer("beta", torch.tensor(float(self.p.init_beta)))
        self.register_buffer("alpha", torch.tensor(float(self.p.init_alpha)))

    def set_classnames(self, classnames: list[str], template: str | None = None) -> None:
        super().set_classnames(classnames, template)
        columns = [self.trained_classnames.index(c) for c in classnames]        # cache columns of these classes
        self.register_buffer("columns", torch.tensor(columns, device=self.device), persistent=False)

    def compute_text_features(self) -> torch.Tensor:
        """W: the dataset template's class features, or the mean of the normalised 7-template features."""
        names = [c.replace("_", " ") for c in self.classnames]
        templates = IMAGENET_TEMPLATES_SELECT if self.dataset in self.p.ensemble_datasets else (self.template,)
        feats = [F.normalize(encode_text(self.clip, self.tokens_on_device(self.tokenize([t.format(n) for n in names]))),
                             dim=-1) for t in templates]
        return F.normalize(torch.stack(feats).mean(0), dim=-1)

    def cache_logits(self, img: torch.Tensor, beta, alpha) -> torch.Tensor:
        """α · exp(−β (1 − f̂ Kᵀ)) V over the current classes, for normalised features (B, D)."""
        affinity = img @ self.cache_keys.t().to(img.dtype)                       # (B, N·K)
        values = self.cache_values.index_select(1, self.columns)                 # (N·K, C)
        return alpha * ((-1) * (beta - beta * affinity)).exp() @ values.to(affinity.dtype)

    def head(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        img = F.normalize(image_features, dim=-1)
        clip_logits = self.clip.logit_scale.exp() * img @ F.normalize(text_features, dim=-1).t()
        return clip_logits + self.cache_logits(img, self.beta, self.alpha)

    # -- the cache and the search --
    def before_training(self, data: FitData) -> None:
        views = augmented_features(self, data.train, data, self.p.augment_views, self.p.cache_batch)
        keys = F.normalize(views.mean(0), dim=-1)                                 # (N·K, D)
        labels = torch.tensor([it.label for it in data.train], device=keys.device)
        self.cache_values = F.one_hot(labels, len(self.trained_classnames)).float()
        if self.learn_keys:
            self.cache_keys = nn.Parameter(keys)
        else:
            self.cache_keys = keys
        logger.info("%s: cache of %d keys from %d augmented views", self.name, len(keys), self.p.augment_views)

    def after_training(self, data: FitData) -> None:
        items = {"val_full": data.val_full, "val": data.val, "none": [], "test": data.test}[self.p.search_on]
        if self.p.search_on == "test" and not items:
            raise BenchError(f"{self.name}: search_on=test needs the test items (bench.regime.test_items)")
        if not items or data.features is None:
            logger.info("%s: no validation items to search on; beta %.3g, alpha %.3g (the card's)", self.name,
                        self.p.init_beta, self.p.init_alpha)
            return
        feats = data.features(items).to(self.device)
        labels = torch.tensor([it.label for it in items], device=self.device)
        beta, alpha = self.search(feats, labels)
        self.beta.fill_(beta)
        self.alpha.fill_(alpha)
        logger.info("%s: searched on %d %s images: beta %.4g, alpha %.4g", self.name, len(items),
                    "test" if self.p.search_on == "test" else "validation", beta, alpha)

    @torch.no_grad()
    def search(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """The official grid: the first (β, α) in β-major order with the highest accuracy (0, 0 if none is > 0)."""
        (b_max, a_max), (b_n, a_n) = self.p.search_scale, self.p.search_step
        betas = [i * (b_max - 0.1) / b_n + 0.1 for i in range(b_n)]
        alphas = [i * (a_max - 0.1) / a_n + 0.1 for i in range(a_n)]
        img = F.normalize(features.float(), dim=-1)
        clip_logits = self.clip.logit_scale.exp() * img @ self.text_features().t()
        rows = []
        for b in betas:
            cache = self.cache_logits(img, b, 1.0)                             # α-free part, once per β
            rows.append(torch.stack([((clip_logits + cache * a).argmax(-1) == labels).sum() for a in alphas]))
        correct = torch.stack(rows)                                            # (b_n, a_n) correct counts
        if int(correct.max()) == 0:
            return 0.0, 0.0
        i, j = (correct == correct.max()).nonzero()[0].tolist()               # the first best, row-major
        return betas[i], alphas[j]


class TipAdapterF(TipAdapter):
    """Tip-Adapter with the cache keys fine-tuned (CE on the Tip-Adapter logits at the init β, α)."""

    name = "tip_adapter_f"
    trains = True
    sized_by_data = True
    learn_keys = True

    def optimizer_options(self) -> dict:
        return {"eps": self.p.adam_eps}

    # -- the official selection on the test set (select_epoch_on: test; the published regime) --
    def before_training(self, data: FitData) -> None:
        super().before_training(data)
        self._best: tuple[float, torch.Tensor] | None = None
        if self.p.select_epoch_on == "test":
            if not data.test or data.features is None:
                raise BenchError(f"{self.name}: select_epoch_on=test needs the test items (bench.regime.test_items)")
            self._test = (data.features(data.test), torch.tensor([it.label for it in data.test]))

    @torch.no_grad()
    def test_accuracy(self) -> float:
        """Accuracy (%) on the test items at the current keys, β and α (what the official script prints)."""
        feats, labels = self._test
        device = self.device
        correct = sum(int((self.logits_from_features(feats[i:i + 1024].to(device)).argmax(-1)
                           == labels[i:i + 1024].to(device)).sum()) for i in range(0, len(labels), 1024))
        return 100.0 * correct / max(len(labels), 1)

    def on_epoch_end(self, epoch: int, total_epochs: int) -> None:
        """The official loop: after each epoch, test at the init β, α; keep the keys of the first best epoch;
        after the last, load them."""
        if self.p.select_epoch_on != "test":
            return
        was_training = self.training
        self.eval()
        acc = self.test_accuracy()
        self.train(was_training)
        if self._best is None or acc > self._best[0]:
            self._best = (acc, self.cache_keys.detach().clone())
            logger.info("%s: epoch %d test accuracy %.2f (best so far)", self.name, epoch, acc)
        if epoch == total_epochs:
            with torch.no_grad():
                self.cache_keys.copy_(self._best[1])

    def after_training(self, data: FitData) -> None:
        """Search β, α; with test selection report the higher of the best epoch's test accuracy (init β, α) and
        the searched one, i.e. keep the init β, α when they score higher on the test set (official main.py)."""
        init = (float(self.beta), float(self.alpha))
        super().after_training(data)
        searched = (float(self.beta), float(self.alpha))
        if self.p.select_epoch_on != "test" or searched == init:
            return
        searched_acc = self.test_accuracy()
        self.beta.fill_(init[0])
        self.alpha.fill_(init[1])
        best_acc = self.test_accuracy()
        if searched_acc >= best_acc:
            self.beta.fill_(searched[0])
            self.alpha.fill_(searched[1])
        logger.info("%s: test accuracy %.2f at the best epoch (init beta, alpha), %.2f searched: reporting the %s",
                    self.name, best_acc, searched_acc, "searched" if searched_acc >= best_acc else "init")

    def extra_state(self) -> dict[str, torch.Tensor]:
        if self._best is None:
            return {}
        return {"best_acc": torch.tensor(self._best[0], dtype=torch.float64), "best_keys": self._best[1]}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if "best_keys" in state:
            self._best = (float(state["best_acc"]), state["best_keys"].to(self.device))
