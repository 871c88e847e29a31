"""Per-cell locks that hold where results really live: flock where it works, lock files where it does not.

Usage:
    >>> with cell_lock(folder) as got:          # False: another process, here or on another node, has the cell
    ...     if got: run()
    >>> is_held(folder)                          # a live process holds the folder's lock (either kind)

`BENCH_LOCK=flock` uses flock on `<folder>/.lock` (the OS releases it when the process dies). `BENCH_LOCK=file` uses
`<folder>/.lock.json`, created with O_CREAT|O_EXCL, holding host, pid and a heartbeat that a thread refreshes every
`BENCH_LOCK_HEARTBEAT_S` (30 s); it is stale when its process is gone (same host) or its heartbeat is older than
`BENCH_LOCK_STALE_S` (300 s), and then taken over by exactly one process (`FileLock._take_over`). `auto` (the
default) decides per filesystem: the mount table (Lustre without `flock`, NFS with `nolock`/`local_lock`), then a
self-test (the same file opened twice must refuse a second exclusive flock); an error from flock also switches to
lock files. A flock that holds within one node only and says so nowhere (e.g. BeeGFS without global file locks)
passes both: set BENCH_LOCK=file there. Either kind backs off from a live lock of the other. Details: docs/DESIGN.md.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.errors import BenchError
from bench.lockfile import FileLock, file_lock_held

logger = logging.getLogger(__name__)

FLOCK_NAME = ".lock"
KINDS = ("auto", "flock", "file")

_kind_by_device: dict[int, str] = {}
_kind_guard = threading.Lock()


def requested_kind() -> str:
    kind = os.environ.get("BENCH_LOCK", "").strip().lower() or "auto"
    if kind not in KINDS:
        raise BenchError(f"BENCH_LOCK={kind!r} is unknown; use auto, flock or file")
    return kind


# ---- which kind: mount table, then a self-test -------------------------------------------------------------

def mount_verdict(folder: Path, mounts: str | None = None) -> str | None:
    """Why the mount holding `folder` has no cluster-wide flock; None when the mount table says nothing against it."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(folder)
    best: tuple[str, str, set[str]] | None = None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])    # \040 is a space
        if (target == point or target.startswith(point.rstrip("/") + "/")) and \
                (best is None or len(point) >= len(best[0])):
            best = (point, parts[2], set(parts[3].split(",")))
    point, fstype, opts = best or ("", "", set())
    if fstype == "lustre" and "flock" not in opts:
        how = "localflock (flock holds within one node only)" if "localflock" in opts else "no flock option"
        return f"Lustre mount {point} with {how}"
    if fstype.startswith("nfs"):
        bad = sorted(opts & {"nolock", "local_lock=flock", "local_lock=all"})
        if bad:
            return f"NFS mount {point} with {bad[0]} (flock holds within one node only)"
    return None


def flock_self_test(folder: Path) -> str | None:
    """None when flock excludes a second open file description of the same file; else what went wrong."""
    probe = Path(folder) / f".flock-probe.{os.getpid()}.{secrets.token_hex(3)}.tmp"
    try:
        with open(probe, "a") as first, open(probe, "a") as second:
            try:
                fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)      # a fresh file: this one cannot be held
                fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            except OSError as err:
                return f"flock fails: {err.strerror or err}"
            return "a second exclusive flock on the same file succeeded"
    finally:
        probe.unlink(missing_ok=True)


def lock_kind(folder: Path) -> str:
    """'flock' or 'file' for locks in `folder` (BENCH_LOCK, else decided once per filesystem and process)."""
    kind = requested_kind()
    if kind != "auto":
        return kind
    device = os.stat(folder).st_dev
    with _kind_guard:
        if device not in _kind_by_device:
            reason = mount_verdict(folder) or flock_self_test(folder)
            _kind_by_device[device] = "file" if reason else "flock"
            if reason:
                logger.info("locks under %s use lock files: %s", folder, reason)
        return _kind_by_device[device]


# ---- flock ---------------------------------------------------------------------------------------------------

class FlockLock:
    """flock(LOCK_EX) on `<folder>/.lock`; an OSError other than 'held' means flock does not work here."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / FLOCK_NAME
        self._fh = None

    def acquire(self, tries: int = 3) -> bool:
        fh = open(self.path, "a")
        for attempt in range(tries):                  # a status probe holds it for microseconds: try again
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fh = fh
                return True
            except BlockingIOError:
                time.sleep(0.02 if attempt + 1 < tries else 0)
            except OSError:
                fh.close()
                raise
        fh.close()
        return False

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()                          # closing the file releases the lock
            self._fh = None


def flock_held(folder: Path) -> bool:
    """A shared-lock probe: True when some process holds `<folder>/.lock` exclusively."""
    path = Path(folder) / FLOCK_NAME
    try:
        fh = open(path)
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:                               # flock does not work here: nobody holds it that way
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


# ---- one entry point for the store ---------------------------------------------------------------------------

def _acquire(folder: Path) -> FlockLock | FileLock | None:
    if lock_kind(folder) == "flock":
        lock = FlockLock(folder)
        try:
            got = lock.acquire()
        except OSError as err:
            if requested_kind() == "flock":
                raise BenchError(f"BENCH_LOCK=flock but flock fails in {folder}: {err.strerror or err}; "
                                 f"use BENCH_LOCK=file") from None
            with _kind_guard:
                _kind_by_device[os.stat(folder).st_dev] = "file"
            logger.warning("flock fails in %s (%s): using lock files from now on", folder, err.strerror or err)
        else:
            if got and file_lock_held(folder):       # a process using lock files has it
                lock.release()
                return None
            return lock if got else None
    lock = FileLock(folder)
    if not lock.acquire():
        return None
    if flock_held(folder):                           # a process using flock has it
        lock.release()
        return None
    return lock


@contextlib.contextmanager
def cell_lock(folder: Path) -> Iterator[bool]:
    """Exclusive, non-blocking lock on `folder` (created if missing); yields False when someone else holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = _acquire(folder)
    try:
        yield lock is not None
    finally:
        if lock is not None:
            lock.release()


def is_held(folder: Path) -> bool:
    """A live process holds `folder`'s lock, of either kind (a stale lock file does not count)."""
    return flock_held(folder) or file_lock_held(folder)
