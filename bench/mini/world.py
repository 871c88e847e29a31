"""Build once, then reuse, the mini world: procedural corpus → tiny CLIP pretraining → miniature CoOp suite.

Usage:
    >>> from bench.mini.world import ensure_world
    >>> w = ensure_world(progress=print)          # about 3 minutes the first time, then instant
    >>> w.checkpoint, w.data_root, w.datasets
    (PosixPath('~/.cache/bench/world-v4-seed0/mini-clip.pt'), PosixPath('.../data'), ('mini_shapes', ...))
    >>> import open_clip; from bench.mini.pretrain import register; register()
    >>> model, _, preprocess = open_clip.create_model_and_transforms("bench-mini", pretrained=str(w.checkpoint))

Layout of `<cache>/world-v<WORLD_VERSION>-seed<seed>/` (cache = argument, else $BENCH_CACHE, else ~/.cache/bench):
    mini-clip.pt        open_clip state_dict of `bench-mini`
    pretrain.json       corpus and weights hashes, final loss, the numerics it was trained under
    data/<dataset>/...  the suite (see bench.mini.suite)
    world.json          manifest, written last: version, seed, build sizes, sha256 of every file, library versions
                        and `content`: one hash per component (inputs, corpus, weights, each dataset tree), which
                        `bench world --check` compares with the reference hashes in bench/mini/reference.json
The world is built in a temporary sibling folder and renamed into place, so a killed build never looks complete.
Rendering is numpy-only float64 (bench.mini.render) and pretraining runs as a subprocess under pinned numerics
(bench.mini.pretrain), so with constraints.txt's versions the world is bit-identical on x86-64 machines with AVX2.
On reuse the manifest, the checkpoint and the split JSONs are re-hashed and the image count checked; anything
corrupt, stale or partial is reported in one line through `progress` and rebuilt. A file lock serialises builders.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

WORLD_VERSION = 4
BACKBONE = "bench-mini"
CHECKPOINT = "mini-clip.pt"
MANIFEST = "world.json"
PRETRAIN_INFO = "pretrain.json"


@dataclass(frozen=True)
class BuildConfig:
    """Sizes of a build. The defaults are the real world; tests pass tiny ones (they get their own folder)."""
    corpus_size: int = 12000
    steps: int = 1400
    batch_size: int = 128
    n_train: int = 24
    n_val: int = 5
    n_test: int = 50
    datasets: tuple[str, ...] | None = None     # None = every dataset of bench.mini.suite

    def tag(self) -> str:
        """'' for the default build, else a short hash that keeps non-default builds in their own folder."""
        if self == BuildConfig():
            return ""
        return "-" + hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


# The CI world: the whole pipeline in seconds (`bench world --check --tiny`); its hashes are in reference.json too.
TINY = BuildConfig(corpus_size=64, steps=2, batch_size=16, n_train=3, n_val=2, n_test=2,
                   datasets=("mini_textures", "mini_digits"))


@dataclass(frozen=True)
class World:
    root: Path
    data_root: Path
    checkpoint: Path
    backbone: str = BACKBONE
    seed: int = 0
    datasets: tuple[str, ...] = field(default_factory=tuple)


def cache_root(cache_dir: Path | str | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench").expanduser()


def world_dir(cache_dir: Path | str | None = None, seed: int = 0, config: BuildConfig | None = None) -> Path:
    return cache_root(cache_dir) / f"world-v{WORLD_VERSION}-seed{seed}{(config or BuildConfig()).tag()}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _images(data_root: Path) -> list[Path]:
    return sorted(p for p in data_root.rglob("*.png"))


def _files_sha256(root: Path, paths: list[Path]) -> str:
    """One hash over `paths` (sorted): each one's path relative to `root` and its content."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def images_sha256(data_root: Path) -> str:
    """One hash over every image under `data_root`."""
    return _files_sha256(data_root, _images(data_root))


def tree_sha256(folder: Path) -> str:
    """One hash over every file under `folder`."""
    return _files_sha256(folder, sorted(q for q in folder.rglob("*") if q.is_file()))


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in ("numpy", "pillow", "scikit-learn", "torch", "open_clip_torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _world(root: Path, manifest: dict) -> World:
    return World(root=root, data_root=root / "data", checkpoint=root / CHECKPOINT, backbone=manifest["backbone"],
                 seed=manifest["seed"], datasets=tuple(manifest["datasets"]))


def verify(root: Path, seed: int, config: BuildConfig, full: bool = False) -> tuple[World | None, str]:
    """(World, "") when `root` holds a complete world of this version/seed/config, else (None, reason)."""
    path = root / MANIFEST
    if not root.is_dir():
        return None, "missing"
    if not path.is_file():
        return None, "no manifest (a partial build)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("world_version") != WORLD_VERSION or manifest.get("seed") != seed:
            return None, f"stale (version {manifest.get('world_version')}, seed {manifest.get('seed')})"
        if manifest.get("config") != json.loads(json.dumps(asdict(config))):
            return None, "stale (built with other sizes)"
        for rel, digest in manifest["files"].items():
            f = root / rel
            if not f.is_file():
                return None, f"{rel} is missing"
            if sha256_file(f) != digest:
                return None, f"{rel} does not match its hash"
        if len(_images(root / "data")) != manifest["n_images"]:
            return None, "images are missing or extra"
        if full and images_sha256(root / "data") != manifest["images_sha256"]:
            return None, "images do not match their hash"
        return _world(root, manifest), ""
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"unreadable manifest ({err.__class__.__name__})"


def find_world(cache_dir: Path | str | None = None, seed: int = 0, config: BuildConfig | None = None) -> World | None:
    """The built world if the cache holds a verified one; never builds."""
    return verify(world_dir(cache_dir, seed, config), seed, config or BuildConfig())[0]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_pretraining(root: Path, seed: int, config: BuildConfig, progress: Callable[[str], None]) -> dict:
    """Corpus + pretraining in a subprocess under PINNED_ENV; writes root/CHECKPOINT and returns pretrain.json."""
    import bench
    from bench.errors import BenchError
    from bench.mini.pretrain import PINNED_ENV

    here = str(Path(bench.__file__).resolve().parent.parent)        # the child imports this very bench
    code = ("import sys; p = sys.argv.pop(1); sys.path.insert(0, p) if p not in sys.path else None; "
            "from bench.mini.pretrain import main; sys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", code, here, "--out", str(root / CHECKPOINT), "--info", str(root / PRETRAIN_INFO),
           "--corpus-size", str(config.corpus_size), "--steps", str(config.steps), "--batch-size",
           str(config.batch_size), "--seed", str(seed)]
    with tempfile.TemporaryFile("w+") as err, subprocess.Popen(cmd, env={**os.environ, **PINNED_ENV},
                                                               stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            progress(line.rstrip("\n"))
        proc.wait()
        err.seek(0)
        tail = [ln for ln in err.read().splitlines() if ln.strip()][-1:] or ["no message"]
    if proc.returncode != 0:
        raise BenchError(f"mini-world pretraining failed (exit {proc.returncode}): {tail[0]}")
    return json.loads((root / PRETRAIN_INFO).read_text(encoding="utf-8"))


def build_world(root: Path, seed: int, config: BuildConfig, progress: Callable[[str], None]) -> World:
    """Build into `root` (an empty or absent folder); the manifest is written last."""
    from bench.mini.render import inputs_sha256
    from bench.mini.suite import NAMES, spec, write_suite

    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info = run_pretraining(root, seed, config, progress)
    progress("writing the mini suite")
    names = write_suite(root / "data", seed, config.n_train, config.n_val, config.n_test,
                        config.datasets or NAMES, progress)
    files = {CHECKPOINT: sha256_file(root / CHECKPOINT), PRETRAIN_INFO: sha256_file(root / PRETRAIN_INFO)}
    for n in names:
        rel = f"data/{n}/{spec(n).split_file}"
        files[rel] = sha256_file(root / rel)
    content = {f"inputs/{k}": v for k, v in inputs_sha256().items()}
    content.update({"corpus": info["corpus_sha256"], "weights": info["weights_sha256"]})
    content.update({f"data/{n}": tree_sha256(root / "data" / n) for n in names})
    manifest = {"world_version": WORLD_VERSION, "seed": seed, "backbone": BACKBONE, "config": asdict(config),
                "datasets": names, "files": files, "n_images": len(_images(root / "data")),
                "images_sha256": images_sha256(root / "data"), "content": content,
                "final_loss": info["final_loss"], "numerics": info["numerics"], "versions": library_versions()}
    _write_json_atomic(root / MANIFEST, manifest)
    progress(f"built in {time.time() - t0:.0f}s")
    return _world(root, manifest)


def checkpoint_path() -> Path:
    """The default world's checkpoint, built first if needed: what the named weights `mini-world` resolve to."""
    return ensure_world().checkpoint


def ensure_world(cache_dir: Path | None = None, seed: int = 0, progress: Callable[[str], None] | None = None,
                 config: BuildConfig | None = None) -> World:
    """The mini world for `seed`, built on first use and verified (cheaply) on every later call."""
    say = progress or (lambda _m: None)
    config = config or BuildConfig()
    final = world_dir(cache_dir, seed, config)
    world, _ = verify(final, seed, config)
    if world is not None:
        return world
    with _locked(final.with_name(final.name + ".lock")):
        world, reason = verify(final, seed, config)        # another process may have built it meanwhile
        if world is not None:
            return world
        for old in final.parent.glob(f".{final.name}.tmp-*"):    # leftovers of killed builds
            shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            say(f"the mini world cache {final} is corrupt or stale ({reason}); rebuilding it")
            trash = final.with_name(f".{final.name}.tmp-old-{os.getpid()}")
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            took = "about 3 minutes on 2 CPU cores" if config == BuildConfig() else "seconds"
            say(f"building the mini world in {final} (once; {took})")
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            built = build_world(tmp, seed, config, say)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return World(final, final / "data", final / CHECKPOINT, built.backbone, built.seed, built.datasets)
