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
import hashlib
import json
import logging
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import __version__, lockfile, locks
from bench.errors import BenchError
from bench.schema import SchemaError, parse_json_file, problem, read_result

logger = logging.getLogger(__name__)



def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through `write(tmp)` to a temporary name in the same folder, fsync, rename: readers see the old or
    the new file, never half of one. On any error (a full disk) the temporary file is removed and the error raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str),
                                                  encoding="utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
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

    def check_writable(self) -> None:
        """A one-line error, before any cell runs, when the results root cannot be created or written."""
        if self.root.exists() and not self.root.is_dir():
            raise BenchError(f"results root {self.root} is a file, not a folder; pass --results DIR")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".bench-write-check.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise BenchError(f"results root {self.root} is not writable ({err.strerror or err}); "
                             "pass --results DIR") from None

    def write_result(self, cell: dict, result: dict) -> Path:
        """Write a result that passes the schema's validation (bench.schema.problem); one that does not is written
        as failed, naming the problem, so it is neither lost nor taken for a completed cell."""
        reason = problem(result)
        if reason and result.get("status") in ("completed", "failed"):
            logger.error("cell %s: its result breaks the schema (%s); recorded as failed", cell["cell_id"], reason)
            result = {**result, "status": "failed", "error": {"type": "SchemaError", "message": reason,
                                                               "log": str(self.cell_dir(cell) / "log.txt")}}
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
        folders = {p.parent for name in (locks.FLOCK_NAME, lockfile.FILE_NAME) for p in runs.glob(f"*/*/*/*/{name}")}
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
        for shared in ("sweeps", "features"):      # writes killed long ago (SIGKILL leaves its temporary file)
            remove_temp_files(self.root / shared, min_age_s=TEMP_GRACE_S)
        return path

    def sweeps(self) -> list[dict]:
        folder = self.root / "sweeps"
        out = [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
        return [s for s in out if s]


# ---- verification: is every result what it claims to be? (`bench verify`, counted by `bench status`) ------

TEMP_NAME = re.compile(r"\.tmp\d*$")       # write_json_atomic: .<name>.<pid>.tmp; checkpoints: .<name>.tmp<pid>
TEMP_GRACE_S = 600.0                       # outside cell folders a younger temp file may be a write in progress


def remove_temp_files(folder: Path, min_age_s: float = 0.0) -> int:
    """Remove the temporary files of interrupted writes under `folder` that are at least `min_age_s` old; 0 for a
    cell folder whose lock this process holds (no one else writes there). Returns how many were removed."""
    removed = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            if TEMP_NAME.search(name) and (min_age_s <= 0 or _age_s(path) >= min_age_s):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


@dataclass
class Finding:
    """One line of `bench verify`: a problem (the tree is not trustworthy) or a note (state worth knowing)."""
    path: Path
    message: str
    problem: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.message if self.problem else 'note: ' + self.message}"


@dataclass
class Verification:
    results: int = 0                       # result.json files checked
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]


def verify_tree(root: Path, hashes: bool = True) -> Verification:
    """Check every result.json under `root/runs` and the files around it; `hashes=False` skips artifact hashing.

    Problems: unparsable or truncated JSON, another schema version, missing fields, a cell id that is not the hash
    of the config and manifest, a folder that does not match the config, a missing artifact or one whose sha256
    differs, a leftover temp file, a checkpoint left beside a completed result, an unreadable sweep file.
    Notes: resumable checkpoints of failed or interrupted cells, stale lock files. Running cells (live lock) are
    skipped for temp files and checkpoints."""
    root = Path(root)
    out = Verification()
    live: dict[Path, bool] = {}

    def running(folder: Path) -> bool:
        if folder not in live:
            live[folder] = locks.is_held(folder)
        return live[folder]

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder = Path(dirpath)
        rel = folder.relative_to(root).parts
        in_runs = bool(rel) and rel[0] == "runs"
        cell_dir = root.joinpath(*rel[:5]) if in_runs and len(rel) >= 5 else None
        for name in sorted(n for n in filenames if TEMP_NAME.search(n)):
            path = folder / name
            if cell_dir is not None and not running(cell_dir):
                out.findings.append(Finding(path, "leftover temp file (an interrupted write)"))
            elif cell_dir is None and _age_s(path) > TEMP_GRACE_S:
                out.findings.append(Finding(path, f"leftover temp file ({_age_s(path) / 3600:.1f} h old)"))
        if in_runs and "result.json" in filenames:
            out.results += 1
            out.findings += _check_result(root, folder / "result.json", hashes)
        if cell_dir == folder:
            out.findings += _check_cell_state(folder, "ckpt" in dirnames, running)
        if rel == ("sweeps",):
            for name in sorted(n for n in filenames if n.endswith(".json")):
                if not isinstance(parse_json_file(folder / name)[0], dict):
                    out.findings.append(Finding(folder / name, "sweep file is not a readable JSON object"))
    return out


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _check_result(root: Path, path: Path, hashes: bool) -> list[Finding]:
    from bench.identity import cell_identity_hash

    try:
        res = read_result(path)
    except SchemaError as err:
        return [Finding(path, str(err))]
    cfg, found = res.config, []
    expected = root / "runs" / cfg["protocol"] / cfg["dataset"] / cfg["method"] / res.cell_id
    if path.parent != expected:
        found.append(Finding(path, f"lies in {path.parent.relative_to(root)}/ but its config and cell id belong in "
                                   f"{expected.relative_to(root)}/"))
    if "manifest_sha256" in res.data:
        actual = cell_identity_hash(cfg, res.data["manifest_sha256"], res.schema_version)
        if actual != res.cell_id:
            found.append(Finding(path, f"cell id {res.cell_id} is not the hash of its config and manifest ({actual}): "
                                       "edited after the run?"))
    elif res.status == "completed":
        found.append(Finding(path, "data.manifest_sha256 missing: the cell id cannot be checked"))
    for name, art in res.artifacts.items():
        found += _check_artifact(path.parent, str(name), art, hashes)
    return found


def _check_artifact(folder: Path, name: str, art: Any, hashes: bool) -> list[Finding]:
    if not isinstance(art, dict) or not isinstance(art.get("path"), str) or not isinstance(art.get("sha256"), str):
        return [Finding(folder / "result.json", f"artifact {name}: needs a path and a sha256")]
    rel = Path(art["path"])
    if rel.is_absolute() or ".." in rel.parts:
        return [Finding(folder / "result.json", f"artifact {name}: path {rel} leaves the cell folder")]
    path = folder / rel
    if not path.is_file():
        return [Finding(path, f"artifact {name} recorded in result.json is missing")]
    if hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != art["sha256"]:
            return [Finding(path, f"artifact {name}: sha256 {digest.hexdigest()[:16]}… but result.json records "
                                  f"{art['sha256'][:16]}… (modified or corrupt)")]
    return []


def _check_cell_state(folder: Path, has_ckpt: bool, running) -> list[Finding]:
    """Checkpoints and lock files of one cell folder (nothing while its lock is live)."""
    lock = lockfile.read_lock_file(folder / lockfile.FILE_NAME)
    if not has_ckpt and lock is None or running(folder):
        return []
    found = []
    if lock is not None and (reason := lockfile.stale_reason(lock)):
        found.append(Finding(folder / lockfile.FILE_NAME, f"stale lock file ({reason}); the next run takes it over",
                             problem=False))
    if has_ckpt:
        res, _ = parse_json_file(folder / "result.json") if (folder / "result.json").exists() else (None, None)
        status = res.get("status") if isinstance(res, dict) else None
        if status == "completed":
            found.append(Finding(folder / "ckpt", "orphaned checkpoint beside a completed result (safe to delete)"))
        else:
            found.append(Finding(folder / "ckpt", f"resumable checkpoint of {'a failed' if status else 'an interrupted'}"
                                                  " cell (a rerun resumes from it)", problem=False))
    return found


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
    import numpy
    import open_clip
    import torch

    env = {"bench": __version__, **git_info(), "python": platform.python_version(), "torch": torch.__version__,
           "open_clip": getattr(open_clip, "__version__", "?"), "numpy": numpy.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
           "host": socket.gethostname(), "pid": os.getpid()}
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    env["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    env["slurm_array_job_id"] = array_job
    env["slurm_array_task_id"] = os.environ.get("SLURM_ARRAY_TASK_ID")
    env["slurm_restart_count"] = os.environ.get("SLURM_RESTART_COUNT")
    env["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return env
