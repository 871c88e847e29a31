"""Grid, cell identity, results store and the local executor: protocols end to end, kills, failures, races."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from toydata import make_imagenet_like

from bench.cell import run_cell
from bench.cli import main
from bench.grid import Grid, expand
from bench.results import ResultStore

FAST = ["--set", "epochs=2", "--set", "iters_per_shot=2", "--set", "batch_size=8"]


def grid(data, **kw):
    base = dict(methods=["clipfit"], datasets=["toy"], shots=[2], seeds=[1], backbone="bench-tiny", pretrained=None,
                data_root=str(data))
    return Grid(**{**base, **kw})


def ids(g):
    return [c["cell_id"] for c in expand(g)]


def test_cell_id_is_stable_and_changes_with_any_config_value(toy):
    ref = ids(grid(toy))
    assert ids(grid(toy)) == ref
    variants = [grid(toy, shots=[1]), grid(toy, seeds=[2]), grid(toy, sets={"lam": 3.0}), grid(toy, sets={"lr": 0.01}),
                grid(toy, backbone="bench-mini"), grid(toy, pretrained="openai"), grid(toy, protocol="base2new"),
                grid(toy, methods=["coop"])]
    seen = {ref[0]}
    for g in variants:
        new = ids(g)[0]
        assert new not in seen
        seen.add(new)


def test_precision_auto_is_resolved_for_the_planned_device(toy):
    """A GPU sweep into a root holding CPU results must not find them complete: auto is bf16 there, fp32 here."""
    cpu, cuda = expand(grid(toy, device="cpu"))[0], expand(grid(toy, device="cuda"))[0]
    assert cpu["config"]["train"]["precision"] == "fp32" and cuda["config"]["train"]["precision"] == "bf16"
    assert cpu["cell_id"] != cuda["cell_id"]
    assert ids(grid(toy, device="cuda", sets={"precision": "bf16"})) == [cuda["cell_id"]]    # the same numbers
    zs = [grid(toy, methods=["zeroshot"], device=d) for d in ("cpu", "cuda")]                 # evaluation-only too
    assert ids(zs[0]) != ids(zs[1])


def test_execution_settings_are_recorded_but_not_hashed(toy):
    ref = expand(grid(toy))[0]
    for key, value in (("eval_batch_size", 1000), ("test_batch_size", 7), ("num_workers", 8), ("ckpt_every", 5),
                       ("compile", True), ("cuda_graphs", True), ("ckpt_interval_s", 30.0)):
        cell = expand(grid(toy, sets={key: value}))[0]
        assert cell["cell_id"] == ref["cell_id"], key
        assert cell["config"]["train"][key] == value and cell["config"]["variant"] == {}
    zs = [expand(grid(toy, methods=["zeroshot"], sets=s))[0] for s in ({}, {"eval_batch_size": 3})]
    assert zs[0]["cell_id"] == zs[1]["cell_id"] and zs[1]["config"]["train"]["eval_batch_size"] == 3
    # the slow path draws augmentations in each DataLoader worker: there the worker count changes the numbers
    slow = [ids(grid(toy, sets={"fast": False, "num_workers": n}))[0] for n in (0, 2)]
    assert slow[0] != slow[1]


def test_a_set_that_changes_the_card_is_a_variant(toy):
    cell = expand(grid(toy, sets={"lam": 3.0, "eval_batch_size": 9}))[0]
    assert cell["config"]["variant"] == {"lam": 3.0}
    assert expand(grid(toy, file_sets={"lr": 0.01}))[0]["config"]["variant"] == {"lr": 0.01}


def test_plan_explain_names_the_layer_of_every_value(toy, tmp_path, capsys):
    conf = tmp_path / "grid.yaml"
    conf.write_text("set: {lr: 0.01, lam: 3}\n")
    capsys.readouterr()
    assert main(["plan", "--suite", "toy", "--data-root", str(toy), "--methods", "coop,clipfit", "--datasets", "toy",
                 "--shots", "1", "--seeds", "1", "--config", str(conf), "--set", "lam=4", "--set", "eval_batch_size=64",
                 "--device", "cuda", "--explain"]) == 0
    out = capsys.readouterr().out
    coop, clipfit = out.split("\ncell ")[1:3]
    assert coop.split(":", 1)[1].startswith(" coop · toy · fewshot · K=1")
    line = {ln.split()[0]: ln for blk in (coop, clipfit) for ln in blk.splitlines()[2:] if ln.strip()}

    def where(block, name):
        row = next(ln for ln in block.splitlines() if ln.split()[:1] == [name])
        return row.split(None, 2)[2]

    assert where(coop, "train.epochs").endswith("coop.yaml overrides[0]")          # when: {shots: [1]}
    assert where(coop, "train.lr") == "grid file set" and where(clipfit, "params.lam") == "--set"
    assert where(clipfit, "train.eval_batch_size") == "--set; execution setting, not in the cell id"
    assert where(clipfit, "train.precision") == "TrainConfig default: auto, resolved for cuda (--device)"
    assert '"bf16"' in line["train.precision"]
    variant = next(ln for ln in clipfit.splitlines() if ln.startswith("variant "))
    assert '{"lam": 4.0, "lr": 0.01}' in variant and variant.endswith("from card and suite; not in the cell id")


def test_plan_for_slurm_is_planned_for_a_gpu(toy, capsys):
    argv = ["plan", "--suite", "toy", "--data-root", str(toy), "--methods", "clipfit", "--datasets", "toy",
            "--shots", "1", "--seeds", "1", "--explain"]
    capsys.readouterr()
    main([*argv, "--executor", "slurm"])
    slurm = capsys.readouterr().out
    main([*argv, "--device", "cpu"])
    local = capsys.readouterr().out
    assert "planned for cuda (SLURM gpus_per_node=1)" in slurm and "planned for cpu (--device)" in local
    assert slurm.splitlines()[2].split()[0] != local.splitlines()[2].split()[0]   # the cell ids: bf16 vs fp32


def test_the_planned_device_follows_flag_profile_gpus_and_this_machine(monkeypatch):
    from bench.device_target import local_device_kind, planned_device

    assert planned_device("cpu", "slurm", 4) == ("cpu", "--device")
    assert planned_device("auto", "slurm", 0)[0] == "cpu" and planned_device("auto", "slurm", 2)[0] == "cuda"
    assert planned_device("auto", "local", local_gpus=True) == ("cuda", "--gpus")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert local_device_kind() == "cpu" and planned_device("auto")[0] == "cpu"


def test_cell_id_follows_the_fewshot_manifest(toy):
    ref = ids(grid(toy))
    split = toy / "toy" / "split_toy.json"
    raw = json.loads(split.read_text())
    raw["train"] = raw["train"][::-1]                    # same items, another order: other draws
    split.write_text(json.dumps(raw))
    from bench.grid import dataset_splits

    dataset_splits.cache_clear()
    assert ids(grid(toy)) != ref


def test_zeroshot_collapses_shots_and_seeds(toy):
    cells = expand(grid(toy, methods=["zeroshot", "coop"], shots=[1, 2], seeds=[1, 2]))
    zs = [c for c in cells if c["config"]["method"] == "zeroshot"]
    assert len(zs) == 1 and zs[0]["config"]["shots"] == 0 and len(cells) == 5


def run_cli(toy, results, *extra):
    return main(["run", "--suite", "toy", "--data-root", str(toy), "--results", str(results), "--no-leaderboard",
                 *FAST, *extra])


def test_plan_marks_completed_cells(toy, tmp_path, capsys):
    r = tmp_path / "r"
    assert run_cli(toy, r, "--methods", "coop", "--datasets", "toy", "--shots", "1", "--seeds", "1") == 0
    main(["plan", "--suite", "toy", "--data-root", str(toy), "--results", str(r), "--methods", "coop",
          "--datasets", "toy", "--shots", "1,2", "--seeds", "1", *FAST])
    out = capsys.readouterr().out
    assert "2 cells: 1 completed, 0 failed, 0 running, 1 pending" in out


def test_base2new_end_to_end(toy, tmp_path):
    r = tmp_path / "r"
    assert run_cli(toy, r, "--methods", "zeroshot,clipfit,coop,linear_probe", "--datasets", "toy",
                   "--protocol", "base2new", "--shots", "4", "--seeds", "1") == 0   # toy: 6 train images a class
    results = {res["config"]["method"]: res for _, res in ResultStore(r).iter_results()}
    assert results["clipfit"]["data"]["classes"] == {"base": 3, "new": 2}          # 5 classes: ceil → 3 / 2
    assert results["clipfit"]["metrics"]["base"]["n"] == 12 and results["clipfit"]["metrics"]["new"]["n"] == 8
    assert results["coop"]["config"]["params"]["ctx_init"] == "a photo of a"
    assert "new" not in results["linear_probe"]["metrics"]                        # cannot name unseen classes


def test_xd_and_dg_end_to_end(toy, tmp_path):
    make_imagenet_like(toy)
    r = tmp_path / "r"
    assert main(["run", "--protocol", "dg", "--methods", "clipfit,coop", "--data-root", str(toy), "--backbone",
                 "bench-tiny", "--pretrained", "none", "--shots", "2", "--seeds", "1", "--results", str(r),
                 "--no-leaderboard", *FAST]) == 0
    res = [res for _, res in ResultStore(r).iter_results()]
    assert len(res) == 2
    for one in res:
        assert one["config"]["dataset"] == "imagenet"
        assert set(one["metrics"]) == {"source", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"}
        assert one["metrics"]["imagenet_a"]["n"] == 6                             # the 3-class subset
    assert main(["run", "--protocol", "xd", "--methods", "clipfit", "--source", "toy", "--datasets", "toy2",
                 "--data-root", str(toy), "--backbone", "bench-tiny", "--pretrained", "none", "--shots", "2",
                 "--seeds", "1", "--results", str(r), "--no-leaderboard", *FAST]) == 0
    xd = [res for _, res in ResultStore(r).iter_results() if res["config"]["protocol"] == "xd"]
    assert set(xd[0]["metrics"]) == {"source", "toy2"}


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(toy, tmp_path, capsys):
    bad = json.loads((toy / "toy2" / "split_toy.json").read_text())["test"][0][0]
    (toy / "toy2" / "images" / bad).write_bytes(b"garbage")
    r = tmp_path / "r"
    assert run_cli(toy, r, "--methods", "clipfit", "--shots", "1", "--seeds", "1") == 1
    by_ds = {res["config"]["dataset"]: res for _, res in ResultStore(r).iter_results()}
    assert by_ds["toy"]["status"] == "completed"
    assert by_ds["toy2"]["status"] == "failed" and bad in by_ds["toy2"]["error"]["message"]
    assert Path(by_ds["toy2"]["error"]["log"]).is_file()
    capsys.readouterr()
    main(["status", str(r)])
    out = capsys.readouterr().out
    assert "1 done, 1 failed" in out and "FAILED" in out and "log:" in out


def test_result_records_config_manifest_versions_and_cost(toy, tmp_path):
    import torch

    cell = expand(grid(toy, sets={"epochs": 1}))[0]
    res = run_cell(cell, tmp_path)
    assert res["status"] == "completed" and res["schema_version"] == 2
    assert res["runtime"] == {"device": "cpu", "precision": "fp32",        # what ran, beside what was planned
                              "threads": torch.get_num_threads()}
    assert res["config"]["train"]["precision"] == "fp32" and res["config"]["target_device"] == "cpu"
    assert res["data"]["manifest_sha256"] == cell["manifest_sha256"]
    assert res["cost"]["trainable_params"] == 448 and res["cost"]["images_per_s"] > 0
    assert res["cost"]["peak_mem_mb"] > 0 and res["cost"]["train_s"] > 0
    assert {"bench", "torch", "open_clip", "git_sha", "host"} <= set(res["env"])
    assert (ResultStore(tmp_path).cell_dir(cell) / "trainable.safetensors").is_file()
    assert not (ResultStore(tmp_path).cell_dir(cell) / "ckpt").exists()
    again = run_cell(cell, tmp_path)                                      # completed: skipped, not rerun
    assert again["started_at"] == res["started_at"]


def _bench(*argv, env=None):
    return [sys.executable, "-m", "bench", *argv]


def test_killed_sweep_reruns_only_what_is_missing(toy, tmp_path):
    r = tmp_path / "r"
    argv = ["run", "--suite", "toy", "--data-root", str(toy), "--results", str(r), "--no-leaderboard",
            "--methods", "clipfit,coop", "--shots", "1,2", "--seeds", "1,2", "--set", "epochs=4"]
    env = {**os.environ, "BENCH_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(_bench(*argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((r / "runs").rglob("result.json"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {res["cell_id"]: res["started_at"] for _, res in ResultStore(r).iter_results()}
    assert 3 <= len(first) < 16
    assert subprocess.run(_bench(*argv), env=env, capture_output=True).returncode == 0
    final = {res["cell_id"]: res for _, res in ResultStore(r).iter_results()}
    assert len(final) == 16 and all(res["status"] == "completed" for res in final.values())
    for cid, started in first.items():
        assert final[cid]["started_at"] == started                          # done exactly once
    assert not list(r.rglob(".*.tmp"))


def test_two_concurrent_sweeps_share_a_tree(toy, tmp_path):
    r = tmp_path / "r"
    argv = ["run", "--suite", "toy", "--data-root", str(toy), "--results", str(r), "--no-leaderboard",
            "--methods", "clipfit,clip_adapter", "--shots", "1,2", "--seeds", "1", *FAST]
    env = {**os.environ, "BENCH_LOG_LEVEL": "WARNING"}
    procs = [subprocess.Popen(_bench(*argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    results = list(ResultStore(r).iter_results())
    assert len(results) == 8 and all(res["status"] == "completed" for _, res in results)


def test_one_worker_per_gpu_shares_the_cells(toy, tmp_path):
    r = tmp_path / "r"
    assert run_cli(toy, r, "--methods", "clipfit,coop", "--shots", "1", "--seeds", "1,2", "--gpus", "0,1") == 0
    results = [res for _, res in ResultStore(r).iter_results()]
    assert len(results) == 8 and all(res["status"] == "completed" for res in results)
    assert len({res["cell_id"] for res in results}) == 8


def test_initialisation_does_not_depend_on_what_ran_before_in_the_process(toy, tmp_path):
    from safetensors.torch import load_file

    from bench.backbone import _load

    cell = expand(grid(toy, methods=["coop"], sets={"epochs": 1}))[0]
    _load.cache_clear()                                    # first cell of a fresh process builds the backbone
    run_cell(cell, tmp_path / "a")
    b = run_cell(cell, tmp_path / "b")                     # the backbone is cached now
    da, db = ResultStore(tmp_path / "a").cell_dir(cell), ResultStore(tmp_path / "b").cell_dir(cell)
    ta, tb = load_file(str(da / "trainable.safetensors")), load_file(str(db / "trainable.safetensors"))
    assert all((ta[k] == tb[k]).all() for k in ta) and b["status"] == "completed"


def test_frozen_image_tower_features_are_encoded_once_and_shared(toy, tmp_path, monkeypatch):
    from bench.backbone import load_backbone

    calls = []
    model = load_backbone("bench-tiny", None).model
    original = type(model).encode_image

    def counting(self, *a, **kw):
        calls.append(1)
        return original(self, *a, **kw)

    monkeypatch.setattr(type(model), "encode_image", counting)
    cells = expand(grid(toy, methods=["zeroshot", "coop", "clip_adapter"], seeds=[1, 2], sets={"epochs": 1}))
    for cell in cells:
        run_cell(cell, tmp_path)
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1      # one test split, one backbone
    train_calls = sum(1 for c in cells if c["config"]["method"] != "zeroshot")   # 1 epoch, 1 batch each
    assert len(calls) == 1 + train_calls                                      # test images encoded once


def test_suite_shot_defaults_apply_to_fewshot_only(toy, capsys, tmp_path, monkeypatch):
    from bench import cards

    suites = Path(os.environ["BENCH_CARDS_PATH"]) / "datasets" / "suites.yaml"
    suites.write_text(suites.read_text() + "  shots: [1, 2]\n  seeds: [1]\n  methods: [clipfit]\n")
    cards.clear_caches()
    main(["plan", "--suite", "toy", "--data-root", str(toy), "--results", str(tmp_path)])
    assert "4 cells" in capsys.readouterr().out                      # 2 datasets × K ∈ {1, 2}
    for folder in ("toy", "toy2"):                                    # K = 16 needs a class with 16 images
        split = toy / folder / "split_toy.json"
        raw = json.loads(split.read_text())
        raw["train"] += [raw["train"][0]] * 10
        split.write_text(json.dumps(raw))
    from bench.grid import dataset_splits

    dataset_splits.cache_clear()
    main(["plan", "--suite", "toy", "--data-root", str(toy), "--results", str(tmp_path), "--protocol", "base2new"])
    out = capsys.readouterr().out
    assert "2 cells" in out and " 16 " in out                        # base-to-new keeps K = 16


def test_a_one_line_error_keeps_its_cause_in_the_cell_log(toy, tmp_path):
    """Weights that fail to load: the result and the console get one line, log.txt the original traceback."""
    import torch

    bad = tmp_path / "weights.pt"
    torch.save({"not_a_clip_tensor": torch.zeros(2)}, bad)          # a state dict, of another model
    (cell,) = expand(grid(toy, pretrained=str(bad), sets={"epochs": 1}))
    res = run_cell(cell, tmp_path / "r")
    assert res["status"] == "failed" and res["error"]["type"] == "BenchError"
    assert res["error"]["message"].startswith(f"cannot load {bad} into bench-tiny: ")
    log = Path(res["error"]["log"]).read_text()
    assert "The above exception was the direct cause of the following exception" in log
    cause = log.split("The above exception was the direct cause")[0]
    assert "Traceback (most recent call last)" in cause and "not_a_clip_tensor" in cause   # open_clip's own error


def test_planning_and_the_cell_share_one_fewshot_draw(toy, monkeypatch):
    from bench.data import draws

    calls = []
    real = draws.sample_fewshot
    monkeypatch.setattr(draws, "sample_fewshot", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    (cell,) = expand(grid(toy, seeds=[7]))
    train, _, sha = draws.fewshot_subset("toy", str(toy), 2, 7)                 # the cell's data
    train2, _, manifest = draws.fewshot_draw("toy", str(toy), 2, 7)            # the cell's manifest file
    assert calls == [(2, 7)] and sha == cell["manifest_sha256"] and train == train2
    train.clear()                                                               # callers get their own lists
    assert draws.fewshot_subset("toy", str(toy), 2, 7)[0] == train2


def test_a_suite_setting_is_not_a_variant_even_where_only_some_methods_have_it(toy, monkeypatch):
    from bench import cards

    real = cards.suite
    monkeypatch.setattr(cards, "suite", lambda name: {**real(name), "train": {"lam": 3.0}} if name == "toy" else
                        real(name))
    cells = expand(grid(toy, methods=["clipfit", "coop"], suite="toy", sets={"lr": 0.01}))
    assert [c["config"]["variant"] for c in cells] == [{"lr": 0.01}, {"lr": 0.01}]
    assert cells[0]["config"]["params"]["lam"] == 3.0
