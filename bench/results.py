"""The results store: one directory per cell, `result.json` written atomically at the end, JSON only.

Usage:
    >>> store = ResultStore(Path("results"))
    >>> store.is_completed(cell)                     # a completed result with the same cell id exists
    >>> with store.lock(cell) as got: ...            # False when another process runs this cell (bench.locks)
    >>> store.write_result(cell, result)

Layout: `<root>/runs/<protocol>/<dataset>/<method>/<cell_id>/{result.json, log.txt, ckpt/, trainable.safetensors}`
and `<root>/sweeps/<sweep_id>.json`. Schema: docs/DESIGN.md. Nothing in the tree is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import socket
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import __version__, locks

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        logger.warning("ignoring malformed %s: %s", path, err)
        return None


class ResultStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def cell_dir(self, cell: dict) -> Path:
        c = cell["config"]
        return self.root / "runs" / c["protocol"] / c["dataset"] / c["method"] / cell["cell_id"]

    def result_path(self, cell: dict) -> Path:
        return self.cell_dir(cell) / "result.json"

    def read(self, cell: dict) -> dict | None:
        return read_json(self.result_path(cell))

    def status(self, cell: dict) -> str:
        """completed | failed | running | pending."""
        res = self.read(cell)
        if res is not None and res.get("cell_id") == cell["cell_id"]:
            return res.get("status", "failed")
        return "running" if self._locked(cell) else "pending"

    def is_completed(self, cell: dict) -> bool:
        return self.status(cell) == "completed"

    def write_result(self, cell: dict, result: dict) -> Path:
        path = self.result_path(cell)
        write_json_atomic(path, result)
        return path

    @contextlib.contextmanager
    def lock(self, cell: dict) -> Iterator[bool]:
        """Exclusive, non-blocking per-cell lock: flock, or lock files where flock does not hold (bench.locks)."""
        with locks.cell_lock(self.cell_dir(cell)) as got:
            yield got

    def _locked(self, cell: dict) -> bool:
        return locks.is_held(self.cell_dir(cell))

    def running_cells(self) -> set[str]:
        """Cell ids whose lock (of either kind) is held by a live process."""
        runs = self.root / "runs"
        folders = {p.parent for name in (locks.FLOCK_NAME, locks.FILE_NAME) for p in runs.glob(f"*/*/*/*/{name}")}
        return {f.name for f in folders if locks.is_held(f)}

    def iter_results(self) -> Iterator[tuple[Path, dict]]:
        for dirpath, dirnames, filenames in os.walk(self.root / "runs"):
            dirnames[:] = [d for d in dirnames if d != "ckpt"]
            if "result.json" in filenames:
                path = Path(dirpath) / "result.json"
                res = read_json(path)
                if res is not None:
                    yield path, res

    def write_sweep(self, sweep: dict) -> Path:
        path = self.root / "sweeps" / f"{sweep['sweep_id']}.json"
        write_json_atomic(path, sweep)
        return path

    def sweeps(self) -> list[dict]:
        folder = self.root / "sweeps"
        out = [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
        return [s for s in out if s]


def git_info() -> dict[str, Any]:
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha or None, "git_dirty": dirty if sha else None}


def environment() -> dict[str, Any]:
    import open_clip
    import torch

    env = {"bench": __version__, **git_info(), "python": platform.python_version(), "torch": torch.__version__,
           "open_clip": getattr(open_clip, "__version__", "?"), "host": socket.gethostname()}
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    env["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    env["slurm_array_job_id"] = array_job
    env["slurm_array_task_id"] = os.environ.get("SLURM_ARRAY_TASK_ID")
    env["slurm_restart_count"] = os.environ.get("SLURM_RESTART_COUNT")
    env["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return env
