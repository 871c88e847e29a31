"""The mini world: a procedural image-caption corpus, a tiny CLIP pretrained on it, and a miniature CoOp suite.

Usage:
    >>> from bench.mini.world import ensure_world
    >>> world = ensure_world(progress=print)     # built once into $BENCH_CACHE (default ~/.cache/bench)
    >>> world.checkpoint, world.data_root, world.datasets

Modules: render (drawing primitives), corpus (pretraining data), pretrain (the `bench-mini` CLIP), suite (the
downstream datasets), world (build/cache/verify), reference (the reference hashes, `bench world --check`), probe
(zero-shot and quick fine-tuning checks).
Importing this package imports neither torch nor open_clip; it registers the world's weights as the named weights
`mini-world` (built on first use), so the backbone door resolves them without knowing the world.
"""

from bench.backbone_spec import register_named_weights

register_named_weights("mini-world", "bench.mini.world:checkpoint_path")
