"""`bench status`: done/failed/pending/running per method and dataset, failures with their logs, SLURM states."""

from __future__ import annotations

HELP = "summarise a results tree: cells done/failed/pending/running, failures with logs, SLURM states, problems"
EPILOG = """examples:
  bench status
  bench status results --failed
  bench status --results /scratch/me/results     # the --results root of `bench run`
"""


def add_arguments(p) -> None:
    from bench.cli._results_arg import add_results_arguments

    add_results_arguments(p)
    p.add_argument("--failed", action="store_true", help="list every failed cell with its error and log")


def _sacct(job_ids: list[str]) -> dict[str, str]:
    import shutil
    import subprocess

    if not job_ids or not shutil.which("sacct"):
        return {}
    try:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(sorted(set(job_ids)))],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def execute(args) -> int:
    from collections import Counter, defaultdict

    from tabulate import tabulate

    from bench.cli._results_arg import results_root
    from bench.results import ResultStore, verify_tree

    root = results_root(args)
    store = ResultStore(root)
    found = {res.get("cell_id"): (path, res) for path, res in store.iter_results()}
    expected: dict[str, dict] = {}
    jobs: dict[str, str] = {}
    for sweep in store.sweeps():
        for cell in sweep.get("cells", []):
            expected[cell["cell_id"]] = cell
        jobs.update(sweep.get("jobs") or {})
    for cid, (_, res) in found.items():
        expected.setdefault(cid, {"method": res["config"]["method"], "dataset": res["config"]["dataset"]})
    running = store.running_cells()
    table: dict[tuple, Counter] = defaultdict(Counter)
    for cid, cell in expected.items():
        state = found[cid][1].get("status", "failed") if cid in found else "pending"
        table[(cell["method"], cell["dataset"])]["running" if cid in running and state != "completed" else state] += 1
    rows = [(m, d, c["completed"], c["failed"], c["running"], c["pending"]) for (m, d), c in sorted(table.items())]
    print(tabulate(rows, headers=["method", "dataset", "done", "failed", "running", "pending"]))
    total = Counter()
    for c in table.values():
        total.update(c)
    print(f"\n{sum(total.values())} cells: {total['completed']} done, {total['failed']} failed, "
          f"{total['running']} running, {total['pending']} pending")
    problems = len(verify_tree(root).problems)
    print(f"verify: {problems} problem{'s' if problems != 1 else ''} (`bench verify {root}` lists them)"
          if problems else "verify: no problems")
    states = _sacct(list(jobs.values()))
    if states:
        print("SLURM:", ", ".join(f"{k} {v}" for k, v in sorted(Counter(states.values()).items())))
    failures = [(cid, r) for cid, (_, r) in found.items() if r.get("status") == "failed"]
    for cid, res in failures if args.failed else failures[:5]:
        err = res.get("error") or {}
        c = res["config"]
        print(f"FAILED {cid} {c['method']} {c['dataset']} K={c['shots']} seed={c['seed']}: "
              f"{err.get('type')}: {err.get('message')}\n       log: {err.get('log')}")
    return 0
