"""Per-cell locks on both paths: flock, and O_EXCL lock files with heartbeats (forced by BENCH_LOCK=file)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import lockfile, locks
from bench.errors import BenchError
from bench.lockfile import FILE_NAME, FileLock
from bench.locks import cell_lock, is_held
from bench.results import ResultStore, verify_tree

REPO = Path(__file__).resolve().parent.parent

# Children wait for `go` (so they start together), then take every cell folder once, as run_cell does:
# skip when done, lock, check done again, run. Inside the lock an O_EXCL marker catches two holders at once.
SWEEP = """
import os, sys, time
from pathlib import Path
from bench.locks import cell_lock
root, n = Path(sys.argv[1]), int(sys.argv[2])
while not (root / "go").exists():
    time.sleep(0.001)
for i in range(n):
    folder = root / f"cell{i}"
    if (folder / "done").exists():
        continue
    with cell_lock(folder) as got:
        if not got or (folder / "done").exists():
            continue
        try:
            os.close(os.open(folder / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            print("TWO HOLDERS", folder, flush=True)
        with open(folder / "runs.log", "a") as fh:
            fh.write(f"{os.getpid()}\\n")
        time.sleep(0.08)                   # longer than a flock retry
        (folder / "done").write_text("x")
        os.unlink(folder / "inside")
"""

# Children wait for `go`, then try to take one stale lock each; winners hold it long enough for all to try.
TAKE = """
import sys, time
from pathlib import Path
from bench.lockfile import FileLock
folders = [Path(p) for p in sys.argv[2:]]
while not Path(sys.argv[1]).exists():
    time.sleep(0.001)
held = []
for folder in folders:
    lock = FileLock(folder)
    got = lock.acquire()
    print(folder.name, int(got), flush=True)
    if got:
        held.append(lock)
time.sleep(2.0)
for lock in held:
    lock.release()
"""


def _children(code: str, args_list: list[list[str]], env: dict) -> list[subprocess.Popen]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return [subprocess.Popen([sys.executable, "-c", code, *args], env=full, stdout=subprocess.PIPE, text=True)
            for args in args_list]


def _ready(procs: list[subprocess.Popen], go: Path) -> list[str]:
    time.sleep(1.0)                                   # let the children import bench
    go.write_text("go")
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outs
    return outs


def _write_lock(folder: Path, age_s: float = 0.0, **record) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    beat = time.time() - age_s
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 4242, "pidns": None, "heartbeat": beat,
                                "token": "t0", **record}))
    os.utime(path, (beat, beat))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(params=["flock", "file"])
def kind(request, monkeypatch):
    monkeypatch.setenv("BENCH_LOCK", request.param)
    return request.param


def test_a_held_lock_excludes_a_second_holder_and_shows_as_running(kind, tmp_path):
    store = ResultStore(tmp_path)
    cell = {"cell_id": "c0ffee", "config": {"protocol": "fewshot", "dataset": "toy", "method": "coop"}}
    folder = store.cell_dir(cell)
    with store.lock(cell) as first:
        assert first
        assert (folder / (".lock" if kind == "flock" else FILE_NAME)).exists()
        with store.lock(cell) as second:
            assert not second
        assert store.status(cell) == "running" and store.running_cells() == {"c0ffee"} and is_held(folder)
    assert store.status(cell) == "pending" and store.running_cells() == set() and not is_held(folder)
    if kind == "file":
        assert not (folder / FILE_NAME).exists()                      # release removes the lock file
    with store.lock(cell) as again:
        assert again


def test_a_lock_of_the_other_kind_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_LOCK", "file")
    with cell_lock(tmp_path) as got:
        assert got
        monkeypatch.setenv("BENCH_LOCK", "flock")
        with cell_lock(tmp_path) as other:
            assert not other
    with cell_lock(tmp_path) as got:                                  # flock now
        assert got
        monkeypatch.setenv("BENCH_LOCK", "file")
        with cell_lock(tmp_path) as other:
            assert not other
        assert not (tmp_path / FILE_NAME).exists()                    # the loser cleaned up its lock file


def test_lock_file_records_owner_and_heartbeat(tmp_path):
    lock = FileLock(tmp_path, stale_s=0.6, heartbeat_every=0.1)
    assert lock.acquire()
    first = json.loads((tmp_path / FILE_NAME).read_text())
    assert first["host"] == socket.gethostname() and first["pid"] == os.getpid() and first["token"]
    time.sleep(0.35)
    assert json.loads((tmp_path / FILE_NAME).read_text())["heartbeat"] > first["heartbeat"]
    lock.release()
    assert not (tmp_path / FILE_NAME).exists() and not lock.lost


def test_heartbeat_keeps_a_lock_fresh_and_a_silent_one_goes_stale(tmp_path, monkeypatch):
    lock = FileLock(tmp_path, stale_s=0.4, heartbeat_every=0.1)
    assert lock.acquire()
    monkeypatch.setattr(lockfile.socket, "gethostname", lambda: "another-node")   # judge it as a remote lock
    for _ in range(8):
        time.sleep(0.1)
        assert lockfile.stale_reason(lockfile.read_lock_file(tmp_path / FILE_NAME), 0.4) is None
    lock._stop.set()                                                  # the owner hangs: no more heartbeats
    lock._thread.join()
    time.sleep(0.6)
    assert "heartbeat" in lockfile.stale_reason(lockfile.read_lock_file(tmp_path / FILE_NAME), 0.4)
    monkeypatch.undo()
    lock.release()


def test_a_stale_heartbeat_is_taken_over_and_a_fresh_one_is_not(tmp_path):
    _write_lock(tmp_path, age_s=5.0)
    assert not FileLock(tmp_path, stale_s=10.0).acquire()             # remote, 5 s old: still held
    assert not FileLock(tmp_path).acquire()
    _write_lock(tmp_path, age_s=20.0)
    lock = FileLock(tmp_path, stale_s=10.0)
    assert lock.acquire()
    record = json.loads((tmp_path / FILE_NAME).read_text())
    assert record["pid"] == os.getpid() and record["token"] == lock.token
    assert not [p for p in tmp_path.iterdir() if p.name != FILE_NAME]  # no claim or guard files left
    lock.release()


def test_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    here = {"host": socket.gethostname(), "pidns": lockfile._pid_namespace()}
    _write_lock(tmp_path, **here, pid=_dead_pid())                    # fresh heartbeat, but its process is gone
    lock = FileLock(tmp_path)
    assert lock.acquire()
    lock.release()
    _write_lock(tmp_path, age_s=10_000, **here, pid=os.getpid())      # a live process: held, however old
    assert not FileLock(tmp_path, stale_s=1.0).acquire()
    assert is_held(tmp_path)


def test_two_takers_never_both_win_a_stale_lock(tmp_path):
    folders = [tmp_path / f"cell{i}" for i in range(3)]
    for folder in folders:
        _write_lock(folder, age_s=1_000)
    go = tmp_path / "go"
    procs = _children(TAKE, [[str(go), *map(str, folders)]] * 6, {"BENCH_LOCK_STALE_S": "60"})
    outs = _ready(procs, go)
    wins = {folder.name: 0 for folder in folders}
    for out in outs:
        for line in out.split("\n"):
            if line:
                name, got = line.split()
                wins[name] += int(got)
    assert wins == {folder.name: 1 for folder in folders}
    leftovers = [p.name for folder in folders for p in folder.iterdir()]
    assert leftovers == [], leftovers                                 # released, no guards or claims left


@pytest.mark.parametrize("lock_kind", ["flock", "file"])
def test_concurrent_processes_run_every_cell_exactly_once(tmp_path, lock_kind):
    n = 30
    go = tmp_path / "go"
    outs = _ready(_children(SWEEP, [[str(tmp_path), str(n)]] * 3, {"BENCH_LOCK": lock_kind}), go)
    assert not any("TWO HOLDERS" in out for out in outs), outs
    runs = [(tmp_path / f"cell{i}" / "runs.log").read_text().split() for i in range(n)]
    assert all(len(r) == 1 for r in runs), runs
    assert not list(tmp_path.rglob(FILE_NAME))                        # every lock file released


def test_flock_self_test_detects_a_lock_that_does_not_hold(tmp_path, monkeypatch):
    assert locks.flock_self_test(tmp_path) is None                    # this machine's filesystem: flock holds
    monkeypatch.setattr(locks, "_kind_by_device", {})
    monkeypatch.setenv("BENCH_LOCK", "auto")
    assert locks.lock_kind(tmp_path) == "flock"
    monkeypatch.setattr(locks.fcntl, "flock", lambda fh, op: None)    # a flock that grants everything
    assert "succeeded" in locks.flock_self_test(tmp_path)
    monkeypatch.setattr(locks, "_kind_by_device", {})
    assert locks.lock_kind(tmp_path) == "file"

    def refuse(fh, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(locks.fcntl, "flock", refuse)
    assert "Function not implemented" in locks.flock_self_test(tmp_path)
    assert not list(tmp_path.iterdir())                               # the probe file is removed


def test_a_flock_error_switches_to_lock_files(tmp_path, monkeypatch):
    def broken(self, tries=3):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks, "_kind_by_device", {})
    monkeypatch.setattr(locks.FlockLock, "acquire", broken)
    monkeypatch.setenv("BENCH_LOCK", "auto")
    with cell_lock(tmp_path) as got:
        assert got and (tmp_path / FILE_NAME).exists()
    assert locks.lock_kind(tmp_path) == "file"
    monkeypatch.setenv("BENCH_LOCK", "flock")
    with pytest.raises(BenchError, match="BENCH_LOCK=flock but flock fails"):
        with cell_lock(tmp_path):
            pass
    monkeypatch.setenv("BENCH_LOCK", "fcntl")
    with pytest.raises(BenchError, match="use auto, flock or file"):
        locks.lock_kind(tmp_path)


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
10.0.0.1@tcp:/scratch /lustre lustre rw,flock 0 0
10.0.0.1@tcp:/work /lustre/work lustre rw,localflock 0 0
10.0.0.1@tcp:/proj /proj lustre rw 0 0
server:/home /home nfs rw,vers=3,nolock 0 0
server:/data /data\\040set nfs4 rw,vers=4.2 0 0
"""


@pytest.mark.parametrize("folder,verdict", [
    ("/tmp/x", None), ("/lustre/results", None), ("/lustre/work/results", "localflock"),
    ("/proj/results", "no flock option"), ("/home/me/results", "nolock"), ("/data set/results", None),
])
def test_the_mount_table_names_filesystems_without_cluster_wide_flock(folder, verdict):
    got = locks.mount_verdict(Path(folder), MOUNTS)
    assert (got is None) if verdict is None else (verdict in got), got


def test_two_concurrent_sweeps_on_lock_files_run_every_cell_exactly_once(toy, tmp_path):
    root = tmp_path / "r"
    argv = [sys.executable, "-m", "bench", "run", "--suite", "toy", "--data-root", str(toy), "--results", str(root),
            "--no-leaderboard", "--methods", "clipfit,coop", "--shots", "1", "--seeds", "1", "--set", "epochs=2",
            "--set", "iters_per_shot=2", "--set", "batch_size=8"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_LOCK": "file", "BENCH_LOG_LEVEL": "WARNING"}
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    logs = sorted((root / "runs").rglob("log.txt"))
    assert len(logs) == 4 and len(list((root / "runs").rglob("result.json"))) == 4
    runs = {log.parent.name: log.read_text().count(" all: acc ") for log in logs}   # one evaluation per run
    assert set(runs.values()) == {1}, runs
    assert not list(root.rglob(".lock")) and not list(root.rglob(FILE_NAME))     # lock files only, all released
    assert verify_tree(root).findings == []
