"""Lock files for filesystems where flock does not hold (see bench.locks, which picks the kind per filesystem).

Usage:
    >>> lock = FileLock(folder)                  # <folder>/.lock.json, created with O_CREAT|O_EXCL
    >>> if lock.acquire(): ...; lock.release()
    >>> stale_reason(read_lock_file(folder / FILE_NAME))    # None while a live process holds it

The file records host, pid (with its start time and pid namespace) and a heartbeat that a thread refreshes every
`BENCH_LOCK_HEARTBEAT_S` (30 s). It is stale when its process is gone (same host) or its heartbeat is older than
`BENCH_LOCK_STALE_S` (300 s); then exactly one process takes it over (`FileLock._take_over`, argued in
docs/DESIGN.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.errors import BenchError

logger = logging.getLogger("bench.locks")

FILE_NAME = ".lock.json"
GUARD_STALE_S = 30.0                                   # a takeover takes milliseconds; its guard is stale after this


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
