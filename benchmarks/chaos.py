"""Fault injection: what a sweep loses when its driver is killed, SLURM tasks die or requeue, slurmd restarts, or
the disk fills while results are written. The answer should be nothing.

Usage:
    python benchmarks/chaos.py                       # all three scenarios (SLURM and disk-full need root)
    python benchmarks/chaos.py --only local --kills 20 --seed 0
    python benchmarks/chaos.py --only slurm --slurm-dir /tmp/bench-chaos-slurm

Scenarios (bounded: ~15 minutes on 2 cores, the mini world built beforehand):
- local: a 60-cell mini-world sweep (clipfit, coop, clip_adapter, linear_probe, lora × 6 datasets × seeds 1, 2,
  K=4); the driver is SIGKILLed (its whole process group) at `--kills` random moments and restarted each time,
  then run to the end.
- slurm: a 24-cell sweep (clipfit, coop × 6 datasets × seeds 1, 2) in tasks of 4 cells on the project's own
  cluster (slurm/start.sh); one running task is scancelled with KILL, another gets USR2 (requeue), slurmd is
  stopped and restarted mid-sweep; then `bench status` and a rerun of the same command finish what is missing.
- disk full: the results root is a small tmpfs that fills up while cells write their results (real ENOSPC);
  then space is freed and the same command is rerun.
For each: cells completed of expected, cells whose run started more than once, completed results written more
than once (duplicates), corrupt or partial result files, leftover temporary files, checkpoints resumed, and the
problems `bench verify` finds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "bench"]


def analyse(root: Path, expected: int) -> dict:
    """The figures of one results tree (log.txt keeps every attempt of a cell: 'cell started' / 'result:' lines)."""
    runs = list((root / "runs").glob("*/*/*/*")) if (root / "runs").is_dir() else []
    completed = corrupt = resumed = started_twice = duplicated = 0
    for cell in runs:
        path = cell / "result.json"
        if path.exists():
            try:
                res = json.loads(path.read_text())
                completed += res["status"] == "completed"
                resumed += bool(res.get("resumed"))
            except (ValueError, KeyError):
                corrupt += 1
        log = (cell / "log.txt").read_text(errors="replace") if (cell / "log.txt").exists() else ""
        started_twice += log.count("cell started") > 1
        duplicated += len(re.findall(r"result: completed", log)) > 1
    temps = [p for p in root.rglob("*") if p.is_file() and (".tmp" in p.name)]
    verify = subprocess.run([*BENCH, "verify", str(root)], capture_output=True, text=True)
    problems = [ln for ln in verify.stdout.splitlines()          # one line per problem, then a summary line
                if ln and not ln.startswith("note:") and " results checked under " not in ln]
    return {"expected": expected, "completed": completed, "lost": expected - completed, "started >1": started_twice,
            "duplicated": duplicated, "corrupt": corrupt, "temp files": len(temps), "resumed": resumed,
            "verify": 0 if verify.returncode == 0 else len(problems)}


def run_until_done(cmd: list[str], env: dict, timeout: float = 600) -> int:
    return subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout).returncode


def local(args, work: Path) -> dict:
    root = work / "local"
    # K=4 (not 1): cells long enough (about 80 s of work in all) that 20 kills 1.5-7 s apart land mid-sweep
    cmd = [*BENCH, "run", "--methods", "clipfit,coop,clip_adapter,linear_probe,lora", "--shots", "4", "--seeds", "1,2",
           "--results", str(root), "--no-leaderboard"]
    env = {**os.environ}
    rng = random.Random(args.seed)
    kills = 0
    for _ in range(args.kills):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(1.5, 7.0))
            break                                          # the sweep finished before this kill
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    code = run_until_done(cmd, env)
    return {"scenario": f"local: {kills} SIGKILLs", **analyse(root, 60), "final exit": code}


def _slurm_env(folder: Path) -> dict:
    out = subprocess.run(["bash", "-c", f"source {folder}/env.sh && env -0"], capture_output=True, text=True,
                         check=True).stdout
    return {**os.environ, **dict(item.split("=", 1) for item in out.split("\0") if "=" in item)}


def _tasks(env: dict, state: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", state, "-o", "%i"], env=env, capture_output=True, text=True).stdout
    return [t for t in out.split() if t]


def slurm(args, work: Path) -> dict:
    folder = args.slurm_dir
    if subprocess.run(["bash", str(REPO / "slurm" / "start.sh"), str(folder)], capture_output=True).returncode:
        return {"scenario": "slurm: cluster did not start (needs root and apt-get)"}
    try:
        return _slurm_faults(args, work, folder)
    finally:                                   # leave no cluster behind (another one, e.g. the tests', needs the ports)
        subprocess.run(["bash", str(REPO / "slurm" / "stop.sh"), str(folder)], capture_output=True)


def _slurm_faults(args, work: Path, folder: Path) -> dict:
    env = _slurm_env(folder)
    env["OMP_NUM_THREADS"] = "1"
    root = work / "slurm"
    cmd = [*BENCH, "run", "--methods", "clipfit,coop", "--shots", "1", "--seeds", "1,2", "--results", str(root),
           "--no-leaderboard", "--executor", "slurm", "--profile", "local", "--cells-per-job", "4",
           "--set", "epochs=400", "--set", "ckpt_interval_s=0"]     # a checkpoint every epoch: kills land mid-write
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    rng = random.Random(args.seed)
    deadline = time.time() + 120
    while not _tasks(env, "RUNNING") and time.time() < deadline:
        time.sleep(1)
    time.sleep(5)
    running = _tasks(env, "RUNNING")
    events = []
    if running:
        victim = rng.choice(running)
        subprocess.run(["scancel", "--signal=KILL", victim], env=env)
        events.append(f"KILL {victim}")
        others = [t for t in running if t != victim]
        if others:
            requeued = rng.choice(others)
            subprocess.run(["scancel", "--signal=USR2", requeued], env=env)
            events.append(f"USR2 {requeued}")
    pid = (folder / "pids" / "slurmd.pid").read_text().strip()
    os.kill(int(pid), signal.SIGTERM)
    time.sleep(5)
    subprocess.run(["bash", str(REPO / "slurm" / "start.sh"), str(folder)], capture_output=True)
    events.append("slurmd restarted")
    deadline = time.time() + 600
    while (_tasks(env, "RUNNING") or _tasks(env, "PENDING")) and time.time() < deadline:
        time.sleep(2)
    before = analyse(root, 24)
    status = subprocess.run([*BENCH, "status", str(root)], env=env, capture_output=True, text=True).stdout
    code = subprocess.run([*cmd, "--wait"], env=env, capture_output=True).returncode
    return {"scenario": f"slurm: {', '.join(events)}", **analyse(root, 24), "final exit": code,
            "lost before rerun": before["lost"], "status before rerun": next((ln for ln in status.splitlines() if " cells: " in ln), "")}


def disk_full(args, work: Path) -> dict:
    # 700 KiB: about a third of what the 24 cells write (results, predictions, tensors, the feature cache), so the
    # disk fills up part-way through the first pass
    mount = work / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        return {"scenario": "disk full: skipped (mounting a tmpfs needs root)"}
    try:
        root = mount / "results"
        cmd = [*BENCH, "run", "--methods", "clipfit,coop", "--shots", "1", "--seeds", "1,2", "--results", str(root),
               "--no-leaderboard"]
        first = run_until_done(cmd, dict(os.environ))
        full = analyse(root, 24)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        code = run_until_done(cmd, dict(os.environ))
        return {"scenario": f"disk full: first pass exit {first}, {full['completed']} completed, "
                            f"{full['corrupt']} corrupt", **analyse(root, 24), "final exit": code}
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["local", "slurm", "disk"], action="append")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slurm-dir", type=Path, default=Path("/tmp/bench-chaos-slurm"))
    p.add_argument("--keep", type=Path, help="keep the results trees here")
    args = p.parse_args()
    from tabulate import tabulate

    subprocess.run([*BENCH, "world"], check=True, stdout=subprocess.DEVNULL)     # built once, not measured
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    scenarios = {"local": local, "slurm": slurm, "disk": disk_full}
    rows, t0 = [], time.perf_counter()
    for name in args.only or list(scenarios):
        t = time.perf_counter()
        rows.append({**scenarios[name](args, work), "s": round(time.perf_counter() - t)})
        print(json.dumps(rows[-1]), flush=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print(tabulate([[r.get(k, "") for k in keys] for r in rows], headers=keys, tablefmt="github"))
    print(f"{time.perf_counter() - t0:.0f} s in all; trees in {work}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    bad = any(r.get("lost") or r.get("duplicated") or r.get("corrupt") or r.get("verify") for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
