"""Contrastive pretraining of the tiny open_clip architecture `bench-mini` on the procedural corpus.

Usage:
    >>> from bench.mini.corpus import make_corpus
    >>> from bench.mini.pretrain import pretrain, save_checkpoint, build_model
    >>> model = pretrain(make_corpus(12000, seed=0), steps=1400, seed=0, progress=print)
    >>> save_checkpoint(model, "/tmp/mini-clip.pt")
    >>> import open_clip; register()
    >>> m, _, preprocess = open_clip.create_model_and_transforms("bench-mini", pretrained="/tmp/mini-clip.pt")

The architecture lives in `bench/model_configs/bench-mini.json` (open_clip model-config JSON, vocabulary 49408 so
`open_clip.get_tokenizer("bench-mini")` works, context 24 = CoOp's 16 context tokens plus a class name, 32 px
images, patch 8). Training is the CLIP recipe: symmetric InfoNCE with a learnable temperature, AdamW, linear
warm-up then cosine, 1,400 steps at batch 128 (1,000 steps left zero-shot on mini_textures at 1.6x chance; 2,000
steps cost 300 s here under the pinned numerics below and left too little for fine-tuning to gain: 16-shot ClipFit
+2.1 points on base classes). Identical captions inside a batch count as positives of each other. Text runs only
up to the batch's last end-of-text token (`bench.backbone.truncate_tokens`, exact under the causal mask: 10 % of a
step). Images get CLIP normalisation and, like
bench's train transform, random resized crops (scale 0.8-1) and horizontal flips, so the model is not thrown by
fine-tuning augmentation.

Bit-identical across x86-64 machines for a seed (world v4), which a long float run is not by default: the
weights depended on the thread count (1, 2, 3, 4 threads: four different checkpoints), on ATen's vector ISA
(AVX-512 vs AVX2 kernels), on oneDNN's ISA and on MKL's code branch. So `bench.mini.world` runs this module
as a subprocess (`python -m bench.mini.pretrain`, usage in `main`) with `PINNED_ENV`: 2 threads and no dynamic
threading, ATen's AVX2 kernels, MKL's CPU-independent COMPATIBLE branch; and `pretrain` turns oneDNN off (its
kernels pick blocking by CPU). What is left is the torch build itself (pinned by `make`, see constraints.txt);
other architectures (ARM) build a different, equally valid world that `bench world --check` reports.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.mini.corpus import Corpus

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
ARCH = "bench-mini"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
THREADS = 2
# Set before torch starts (hence a subprocess): read once by ATen, MKL and OpenMP.
PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE",
              "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}


def register() -> None:
    """Make open_clip know `bench-mini` (idempotent)."""
    import open_clip

    if ARCH not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def build_model(seed: int = 0):
    """A randomly initialised `bench-mini` CLIP (fp32, CPU), deterministic for `seed`."""
    import open_clip

    register()
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)        # open_clip warns that no pretrained weights were loaded
    try:
        return open_clip.create_model(ARCH, precision="fp32", device="cpu")
    finally:
        logging.disable(logging.NOTSET)


def tokenizer():
    import open_clip

    register()
    return open_clip.get_tokenizer(ARCH)


@contextlib.contextmanager
def fixed_threads(n: int, mkldnn: bool = True) -> Iterator[None]:
    """`n` intra-op threads (and oneDNN off if not `mkldnn`) inside the block."""
    old, old_mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(n)
    torch.backends.mkldnn.enabled = mkldnn and old_mkldnn
    try:
        yield
    finally:
        torch.set_num_threads(old)
        torch.backends.mkldnn.enabled = old_mkldnn


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) → normalised float (n, 3, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def augment(x: torch.Tensor, gen: torch.Generator, min_scale: float = 0.8) -> torch.Tensor:
    """Batched random resized crop (area in [min_scale, 1], aspect 3/4-4/3) and horizontal flip."""
    n = x.shape[0]
    area = min_scale + (1 - min_scale) * torch.rand(n, generator=gen)
    logr = (torch.rand(n, generator=gen) * 2 - 1) * math.log(4 / 3)
    sx = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
    sy = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    tx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; `same[i, j]` marks pairs whose captions are identical (all positives)."""
    logits = scale * img @ txt.t()
    target = same.float() / same.float().sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.log_softmax(0).t(), 1).mean())


def pretrain(corpus: Corpus, steps: int = 1400, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
             warmup: int = 30, threads: int = THREADS, progress: Callable[[str], None] | None = None, log_every: int = 50):
    """Train `bench-mini` from scratch on `corpus`; returns the model in eval mode."""
    from bench.backbone import encode_text, truncate_tokens

    say = progress or (lambda _m: None)
    with fixed_threads(threads, mkldnn=False):
        model = build_model(seed)
        tok = tokenizer()
        flat = [c for caps in corpus.captions for c in caps]
        uniq = sorted(set(flat))
        cap_id = {c: i for i, c in enumerate(uniq)}
        tokens = tok(uniq)
        # Train only the embedding rows the corpus uses: AdamW leaves rows that never get a gradient untouched
        # anyway, so this is the same optimisation, without a dense 49408-row update every step (~15% of a step).
        full_embedding = model.token_embedding
        used = torch.unique(tokens)                 # sorted: padding (0) stays 0, end-of-text stays the largest id
        tokens = torch.searchsorted(used, tokens)
        model.token_embedding = torch.nn.Embedding.from_pretrained(full_embedding.weight[used].clone(), freeze=False)
        ids = np.array([[cap_id[c] for c in caps] for caps in corpus.captions])
        images = to_tensor(corpus.images)
        rng = np.random.default_rng([seed, 202])
        gen = torch.Generator().manual_seed(seed)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.98), eps=1e-6)
        n = len(images)
        order, pos = rng.permutation(n), 0
        t0, run_loss, last = time.time(), 0.0, float("nan")
        model.train()
        for step in range(steps):
            if pos + batch_size > n:
                order, pos = rng.permutation(n), 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            cap = ids[idx, rng.integers(0, ids.shape[1], len(idx))]
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
            x = augment(images[idx], gen)
            ct = torch.from_numpy(cap)
            img = model.encode_image(x, normalize=True)
            txt = F.normalize(encode_text(model, truncate_tokens(model, tokens[ct])), dim=-1)
            loss = clip_loss(img, txt, model.logit_scale.exp(), ct[:, None] == ct[None, :])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            run_loss += loss.item()
            if (step + 1) % log_every == 0 or step + 1 == steps:
                k = (step % log_every) + 1
                last = run_loss / k
                say(f"pretraining step {step + 1}/{steps}  loss {last:.3f}  ({time.time() - t0:.0f}s)")
                run_loss = 0.0
        with torch.no_grad():
            full_embedding.weight[used] = model.token_embedding.weight
        model.token_embedding = full_embedding
        model.eval()
        model.final_loss = last
    return model


def save_checkpoint(model, path: str | Path) -> Path:
    """A plain state_dict, loadable by open_clip.create_model_and_transforms("bench-mini", pretrained=path)."""
    path = Path(path)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def weights_sha256(model) -> str:
    """One hash over the state_dict: names, dtypes, shapes and raw bytes, in sorted order (file format aside)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def numerics() -> dict:
    """What the float results of this process depend on, for the world manifest."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "mkldnn": False, "mkl_cbwr": PINNED_ENV["MKL_CBWR"]}


def main(argv: list[str] | None = None) -> int:
    """python -m bench.mini.pretrain --out mini-clip.pt --info pretrain.json [--corpus-size N --steps N ...]

    Generates the corpus, pretrains, saves the checkpoint and writes `info` (corpus and weights hashes, losses,
    numerics). Progress goes to stdout, one line per message. Run it with PINNED_ENV (bench.mini.world does).
    """
    from bench.mini.corpus import corpus_sha256, make_corpus

    p = argparse.ArgumentParser(prog="python -m bench.mini.pretrain")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--info", type=Path, required=True)
    p.add_argument("--corpus-size", type=int, default=12000)
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    say = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.time()
    say(f"generating the corpus: {a.corpus_size} captioned images (seed {a.seed})")
    corpus = make_corpus(a.corpus_size, a.seed)
    say(f"corpus ready ({time.time() - t0:.1f}s); pretraining {ARCH} for {a.steps} steps at batch {a.batch_size}")
    model = pretrain(corpus, steps=a.steps, batch_size=a.batch_size, seed=a.seed, log_every=max(1, a.steps // 6),
                     progress=say)
    save_checkpoint(model, a.out)
    info = {"corpus_sha256": corpus_sha256(corpus), "weights_sha256": weights_sha256(model),
            "final_loss": round(float(model.final_loss), 6), "numerics": numerics()}
    a.info.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


def load_model(path: str | Path):
    """The pretrained mini CLIP through open_clip's standard path (eval mode, fp32, CPU)."""
    import open_clip

    register()
    model = open_clip.create_model(ARCH, pretrained=str(path), precision="fp32", device="cpu")
    return model.eval()


if __name__ == "__main__":
    sys.exit(main())
