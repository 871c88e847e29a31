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
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.errors import BenchError

logger = logging.getLogger(__name__)

FLOCK_NAME = ".lock"
FILE_NAME = ".lock.json"
KINDS = ("auto", "flock", "file")
GUARD_STALE_S = 30.0                                   # a takeover takes milliseconds; its guard is stale after this

_kind_by_device: dict[int, str] = {}
_kind_guard = threading.Lock()


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    value = float(raw) if re.fullmatch(r"\d+(\.\d*)?|\.\d+", raw) else -1.0 if raw else default
    if not value > 0:
        raise BenchError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def stale_after_s() -> float:
    return _seconds("BENCH_LOCK_STALE_S", 300.0)


def heartbeat_s() -> float:
    return _seconds("BENCH_LOCK_HEARTBEAT_S", min(30.0, stale_after_s() / 5))


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


# ---- lock files ----------------------------------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process from /proc, or None where /proc has no such entry."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[-1].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                                   # EPERM: it exists, owned by someone else
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, now_start = stat
    return state != "Z" and (start is None or now_start == start)


@dataclass
class LockFileInfo:
    record: dict | None                               # None: unreadable (being written, or not a lock record)
    inode: int
    mtime_ns: int

    def identity(self) -> tuple:
        return self.inode, self.mtime_ns, (self.record or {}).get("token")


def read_lock_file(path: Path) -> LockFileInfo | None:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            raw = fh.read(65536)
    except FileNotFoundError:
        return None
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        record = None
    return LockFileInfo(record if isinstance(record, dict) else None, st.st_ino, st.st_mtime_ns)


def stale_reason(info: LockFileInfo, stale_s: float | None = None) -> str | None:
    """Why a lock file no longer protects anything; None while it is held."""
    rec = info.record or {}
    host, pid = rec.get("host"), rec.get("pid")
    if host == socket.gethostname() and rec.get("pidns") == _pid_namespace() and isinstance(pid, int):
        return None if _alive(pid, rec.get("pid_start")) else f"process {pid} on {host} is gone"
    stale_s = stale_after_s() if stale_s is None else stale_s
    beat = rec.get("heartbeat")
    beat = beat if isinstance(beat, (int, float)) else 0.0
    age = time.time() - max(info.mtime_ns / 1e9, beat)
    if age > stale_s:
        return f"heartbeat of {host or 'an unknown host'} pid {pid} is {age:.0f} s old (stale after {stale_s:.0f} s)"
    return None


def _owner(**extra) -> bytes:
    pid = os.getpid()
    stat = _proc_stat(pid)
    return json.dumps({"host": socket.gethostname(), "pid": pid, "pidns": _pid_namespace(),
                       "pid_start": stat[1] if stat else None, **extra, "heartbeat": round(time.time(), 3)}).encode()


def file_lock_held(folder: Path) -> bool:
    info = read_lock_file(Path(folder) / FILE_NAME)
    return info is not None and stale_reason(info) is None


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class FileLock:
    """An O_CREAT|O_EXCL lock file with a heartbeat thread; stale ones are taken over (see the module notes)."""

    def __init__(self, folder: Path, stale_s: float | None = None, heartbeat_every: float | None = None):
        self.path = Path(folder) / FILE_NAME
        self.stale_s = stale_after_s() if stale_s is None else stale_s
        self.heartbeat_every = heartbeat_s() if heartbeat_every is None else heartbeat_every
        self.token: str | None = None
        self.lost = False                             # the heartbeat found the file gone or someone else's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        for _ in range(8):                            # each round: create, or judge the holder (and maybe take over)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = read_lock_file(self.path)
                if info is None:
                    continue                          # released meanwhile
                reason = stale_reason(info, self.stale_s)
                if reason is None or not self._take_over(info, reason):
                    return False
                continue
            self.token = secrets.token_hex(8)
            try:
                os.write(fd, _owner(started=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    token=self.token))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
            self._thread.start()
            return True
        return False

    def _take_over(self, info: LockFileInfo, reason: str) -> bool:
        """Remove the stale lock `info`; True when it is gone (create again), False when the cell is taken.

        One guard file per stale lock (O_EXCL) elects one breaker; it renames the lock away only after checking
        it is still that file, then checks what it moved (inode, mtime, token). docs/DESIGN.md has the argument."""
        ident = info.identity()
        key = hashlib.sha256(repr(ident).encode()).hexdigest()[:12]
        guards = []
        for level in range(1, 6):                     # a guard left by a crashed breaker: the next level
            guard = self.path.with_name(f"{FILE_NAME}.{key}.{level}.break.tmp")
            try:
                fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                old = read_lock_file(guard)
                if old is None or stale_reason(old, max(self.stale_s, GUARD_STALE_S)) is None:
                    _remove(guards)
                    return old is None                # being broken by someone else (or just finished)
                guards.append(guard)
                continue
            with os.fdopen(fd, "wb") as fh:
                fh.write(_owner())
            guards.append(guard)
            break
        else:
            _remove(guards)
            return False
        try:
            now = read_lock_file(self.path)
            if now is None:
                return True
            if now.identity() != ident:
                return False
            claim = self.path.with_name(f"{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            try:
                os.rename(self.path, claim)
            except FileNotFoundError:
                return True
            moved = read_lock_file(claim)
            if moved is not None and moved.identity() == ident:
                claim.unlink(missing_ok=True)
                logger.warning("took over the lock %s: %s", self.path, reason)
                return True
            try:                                      # moved a live lock: put it back
                os.link(claim, self.path)
            except FileExistsError:
                logger.error("while putting back the live lock %s another process created one; the cell may run "
                             "twice", self.path)
            except OSError:                           # no hard links on this filesystem
                os.replace(claim, self.path)
            claim.unlink(missing_ok=True)
            return False
        finally:
            _remove(guards)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            if not self._touch():
                self.lost = True
                logger.warning("lock %s was lost (removed or taken over); stopping its heartbeat", self.path)
                return

    def _touch(self) -> bool:
        """Rewrite the heartbeat through our own descriptor, so a file that is no longer ours is never written."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            record = json.loads(os.pread(fd, 65536, 0))
            if not isinstance(record, dict) or record.get("token") != self.token:
                return False
            record["heartbeat"] = round(time.time(), 3)
            data = json.dumps(record).encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
            return True
        except (ValueError, UnicodeDecodeError):
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        info = read_lock_file(self.path)
        if info is not None and info.record and info.record.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.token = None


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
