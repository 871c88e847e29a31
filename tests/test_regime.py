"""The published regime is the official one, point by point, and the default regime is what it was.

Point by point (bench.regime): CLIP converted as OpenAI's convert_weights; the tensors the official trainers create in
fp16 are fp16 and the optimizer steps them themselves (no fp32 master copy), with no loss scaling; Tip-Adapter-F
keeps the epoch with the best test accuracy and reports the higher of that and the searched accuracy; on ImageNet
Tip-Adapter(-F) search on the test set; the regime is in the cell id, result.json and every table row.
The default regime: the cells of the tiny mini world (deterministic by design) give the accuracies and trainable
tensors the code before the regime existed gave (`python tests/test_regime.py CACHE` prints them for any checkout).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TOY_CLASSES = ["red square", "green square", "blue square", "yellow square", "purple square"]
# (method, its tensors the official code keeps in fp16, its trainable tensors it keeps in fp32)
OFFICIAL_DTYPES = [
    ("coop", {"ctx"}, set()),
    ("cocoop", {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
                "meta_net.linear2.bias"}, set()),
    ("kgcoop", {"ctx"}, set()),
    ("maple", {"ctx", "proj.weight", "proj.bias"}, {"deep_text.0", "deep_proj.0.weight", "deep_proj.0.bias"}),
    ("promptsrc", {"ctx"}, {"visual_prompt", "deep_text.0", "deep_vision.0"}),
    ("clipfit", {"clip.transformer.resblocks.0.mlp.c_proj.bias"}, {"clip.visual.ln_pre.weight", "clip.visual.ln_post.bias"}),
]


def _build(name: str, backbone, precision: str = "pure_fp16", dataset: str = "toy"):
    import torch

    from bench import regime
    from bench.config import resolve
    from bench.methods import build_method

    params, _ = resolve(name, dataset, "fewshot", 2, regime="published")
    bb = regime.cell_backbone(backbone, precision, torch.device("cpu"))
    method = build_method(name, bb, TOY_CLASSES, "a photo of a {}.", params, dataset=dataset)
    return method


@pytest.mark.parametrize("name,fp16,fp32", OFFICIAL_DTYPES)
def test_published_trainable_tensors_are_the_official_dtypes_and_step_without_a_master_copy(name, fp16, fp32, toy,
                                                                                           tiny_backbone, tmp_path):
    import torch

    from bench import cards, regime
    from bench.config import TrainConfig
    from bench.data.splits import read_splits
    from bench.trainer import make_optimizer, train

    method = _build(name, tiny_backbone)
    regime.prepare(method, TrainConfig(precision="pure_fp16"))
    trainable = method.trainable_parameters()
    assert {n for n, p in trainable.items() if p.dtype == torch.float16} >= fp16
    assert all(trainable[n].dtype == torch.float32 for n in fp32)
    clip = method.clip                                          # CLIP as convert_weights leaves it
    assert clip.transformer.resblocks[0].mlp.c_fc.weight.dtype == torch.float16
    assert clip.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    assert clip.text_projection.dtype == torch.float16
    assert clip.visual.ln_pre.weight.dtype == clip.token_embedding.weight.dtype == clip.logit_scale.dtype == torch.float32
    assert tiny_backbone.model.text_projection.dtype == torch.float32          # the loaded backbone is untouched

    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = make_optimizer(TrainConfig(), list(trainable.values()))
    assert all(p is q for p, q in zip(optimizer.param_groups[0]["params"], trainable.values()))   # no master copy
    items = read_splits(cards.dataset_card("toy"), toy).train[:10]
    cfg = TrainConfig(epochs=2, batch_size=5, precision="pure_fp16", schedule="constant", lr=0.05, ckpt_interval_s=0)
    train(method, items, cfg, shots=2, seed=1, device=torch.device("cpu"), ckpt_dir=tmp_path / "ckpt")
    after = method.trainable_parameters()
    assert all(after[n].dtype == before[n].dtype for n in before)                # stepped in place, in its dtype
    assert any(not torch.equal(after[n], before[n]) for n in fp16 if n in after)  # the fp16 tensors did train
    assert _checkpoint_meta(tmp_path / "ckpt")["grad_scaler"] == {}             # no loss scaling
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "ckpt" / "state.safetensors"))
    names = list(after)                                                          # optimizer index → tensor name
    momentum = {names[int(k.split(".")[1])]: v for k, v in saved.items() if k.endswith(".momentum_buffer")}
    assert momentum and all(v.dtype == after[n].dtype for n, v in momentum.items())   # SGD state in the param's dtype
    assert any(v.dtype == torch.float16 for v in momentum.values())


def _checkpoint_meta(folder: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(folder / "state.safetensors"), framework="pt") as fh:
        return json.loads(fh.metadata()["bench"])["meta"]


def test_the_fp16_autocast_regime_keeps_its_scaler(toy, tiny_backbone, tmp_path):
    """The contrast: bench's own fp16 (fp32 master weights + autocast) scales the loss; pure fp16 does not."""
    import torch

    from bench import cards
    from bench.config import TrainConfig
    from bench.data.splits import read_splits
    from bench.methods import build_method
    from bench.trainer import train

    method = build_method("coop", tiny_backbone, TOY_CLASSES, "a photo of a {}.", {"n_ctx": 4}, dataset="toy")
    items = read_splits(cards.dataset_card("toy"), toy).train[:10]
    cfg = TrainConfig(epochs=1, batch_size=5, precision="fp16", schedule="constant", ckpt_interval_s=0)
    train(method, items, cfg, shots=2, seed=1, device=torch.device("cpu"), ckpt_dir=tmp_path / "ckpt")
    assert method.ctx.dtype == torch.float32 and _checkpoint_meta(tmp_path / "ckpt")["grad_scaler"]


def test_published_promptsrc_aggregates_the_whole_model_each_tensor_in_its_dtype(tiny_backbone):
    """Official GPA: every tensor of the state dict, frozen fp16 weights included, weighted and summed in its own
    dtype (so a frozen weight moves by fp16 rounding); bench's default averages the prompts only, in fp32."""
    import torch

    from bench import regime
    from bench.config import TrainConfig
    from bench.methods.promptsrc import gpa_weights

    m = _build("promptsrc", tiny_backbone)
    regime.prepare(m, TrainConfig(precision="pure_fp16"))
    assert m.p.gpa_scope == "model"
    frozen = m.clip.transformer.resblocks[0].mlp.c_fc.weight
    start, ctx = frozen.detach().clone(), m.ctx.detach().clone()
    w = gpa_weights(3, m.p.gpa_mean, m.p.gpa_std, m.p.gpa_epochs)
    for epoch in (1, 2, 3):
        m.on_epoch_end(epoch, 3)
    expected = start * w[0] + start * w[1] + start * w[2]                          # fp16 arithmetic, as official
    assert frozen.dtype == torch.float16 and torch.equal(frozen.detach(), expected)
    assert m.ctx.dtype == torch.float16 and torch.equal(m.ctx.detach(), ctx * w[0] + ctx * w[1] + ctx * w[2])

    default = _build("promptsrc", tiny_backbone, precision="auto")
    default_frozen = default.clip.transformer.resblocks[0].mlp.c_fc.weight.detach().clone()
    default.p = type(default.p)(**{**default.p.__dict__, "gpa_scope": "prompts"})
    for epoch in (1, 2, 3):
        default.on_epoch_end(epoch, 3)
    assert torch.equal(default.clip.transformer.resblocks[0].mlp.c_fc.weight, default_frozen)


class _ScriptedF:
    """Tip-Adapter-F's selection logic with scripted test accuracies."""

    def __init__(self, tiny_backbone, accuracies):
        import torch

        self.method = _build("tip_adapter_f", tiny_backbone, precision="auto")
        self.method.cache_keys = torch.nn.Parameter(torch.zeros(4, tiny_backbone.model.visual.output_dim))
        self.method._best = None
        self.accuracies = accuracies
        self.method.test_accuracy = self.next_accuracy

    def next_accuracy(self) -> float:
        return self.accuracies(self.method)


def test_tip_adapter_f_keeps_the_first_epoch_with_the_best_test_accuracy(tiny_backbone):
    import torch

    by_epoch = [40.0, 55.0, 55.0, 50.0]                 # epochs 2 and 3 tie: the first best (2) is kept
    epoch = {"n": 0}
    scripted = _ScriptedF(tiny_backbone, lambda m: by_epoch[epoch["n"]])
    m = scripted.method
    for e in range(1, 5):
        epoch["n"] = e - 1
        with torch.no_grad():
            m.cache_keys.fill_(float(e))               # the keys after epoch e
        m.on_epoch_end(e, 4)
    assert float(m.cache_keys[0, 0]) == 2.0 and m._best[0] == 55.0
    state = m.extra_state()                             # a resumed run keeps the best so far
    m._best = None
    m.load_extra_state(state)
    assert m._best[0] == 55.0 and float(m._best[1][0, 0]) == 2.0


@pytest.mark.parametrize("init_acc,searched_acc,kept", [(70.0, 60.0, "init"), (60.0, 70.0, "searched"),
                                                        (65.0, 65.0, "searched")])
def test_tip_adapter_f_reports_the_higher_of_the_best_epoch_and_the_searched_accuracy(tiny_backbone, init_acc,
                                                                                     searched_acc, kept):
    import torch

    from bench.methods.base import FitData

    init = (1.0, 1.17)
    scripted = _ScriptedF(tiny_backbone, lambda m: init_acc if (float(m.beta), round(float(m.alpha), 2)) == init
                          else searched_acc)
    m = scripted.method
    m.search = lambda feats, labels: (5.0, 2.0)         # the grid search's answer
    items = [object()] * 3
    data = FitData([], [], items, None, torch.device("cpu"), 1, features=lambda it: torch.zeros(len(it), 4))
    data.val_full = [type("I", (), {"label": 0})()] * 3
    m.after_training(data)
    got = (float(m.beta), round(float(m.alpha), 2))
    assert got == (init if kept == "init" else (5.0, 2.0))


def test_published_imagenet_searches_on_the_test_set_and_other_datasets_on_validation(tiny_backbone):
    import torch

    from bench.config import resolve
    from bench.methods.base import FitData
    from bench.regime import marks, test_items

    for name in ("tip_adapter", "tip_adapter_f"):
        imagenet, _ = resolve(name, "imagenet", "fewshot", 4, regime="published")
        dtd, _ = resolve(name, "dtd", "fewshot", 4, regime="published")
        default, _ = resolve(name, "imagenet", "fewshot", 4)
        assert imagenet["search_on"] == "test" and dtd.get("search_on", "val_full") == "val_full"
        assert default.get("search_on", "val_full") == "val_full"
        assert "test-set selection" in marks({"regime": "published", "params": imagenet})
    evals = [("all", TOY_CLASSES, ["t1", "t2"], "imagenet", "")]
    assert test_items({"params": {"search_on": "test"}}, evals) == ["t1", "t2"]
    assert test_items({"params": {"search_on": "val_full"}}, evals) == []

    m = _build("tip_adapter", tiny_backbone, precision="auto", dataset="imagenet")
    seen = {}
    m.search = lambda feats, labels: seen.setdefault("n", len(labels)) and (2.0, 1.0)
    item = type("I", (), {"label": 1})()
    data = FitData([], [], [item], None, torch.device("cpu"), 1, features=lambda it: torch.ones(len(it), 4),
                   test=[item] * 5)
    m.after_training(data)
    assert seen["n"] == 5 and float(m.beta) == 2.0                              # the 5 test items, not the 1 val


def test_the_regime_is_in_the_cell_id_result_and_every_table_row(toy, tmp_path):
    from bench.cli import main
    from bench.grid import Grid, expand
    from bench.report.collect import load_results
    from bench.results import ResultStore

    grid = dict(methods=["coop", "tip_adapter_f"], datasets=["toy"], shots=[2], seeds=[1], data_root=str(toy),
                backbone="bench-tiny", pretrained=None)
    default, published = expand(Grid(**grid)), expand(Grid(**grid, regime="published"))
    assert all("regime" not in c["config"] for c in default)                     # default ids as they always were
    assert all(c["config"]["regime"] == "published" for c in published)
    assert not {c["cell_id"] for c in default} & {c["cell_id"] for c in published}
    r = tmp_path / "r"
    common = ["run", "--methods", "coop,tip_adapter_f", "--datasets", "toy", "--data-root", str(toy), "--backbone",
              "bench-tiny", "--pretrained", "none", "--results", str(r), "--shots", "2", "--seeds", "1"]
    # (no --set: a --set makes a variant of its own, titled by what it changed; the cards' budgets are tiny here)
    assert main([*common, "--no-leaderboard"]) == 0 and main([*common, "--regime", "published"]) == 0
    results = [res for _, res in ResultStore(r).iter_results()]
    assert sorted(res["config"].get("regime", "default") for res in results) == ["default"] * 2 + ["published"] * 2
    rows = load_results(r).completed.drop_duplicates("cell_id").set_index("method")["method_title"].to_dict()
    assert rows["coop"] == "CoOp" and rows["coop@published"] == "CoOp (published regime)"
    assert rows["tip_adapter_f@published"] == "Tip-Adapter-F (published regime, test-set selection)"
    board = (r / "LEADERBOARD.md").read_text()
    assert "CoOp (published regime)" in board and "Tip-Adapter-F (published regime, test-set selection)" in board


def test_pure_fp16_on_a_device_without_fp16_is_a_one_line_error(monkeypatch, tiny_backbone):
    import torch

    from bench import regime
    from bench.errors import BenchError

    def no_fp16(*args, **kwargs):
        raise RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'\nmore lines')

    monkeypatch.setattr(torch, "matmul", no_fp16)
    monkeypatch.setattr(torch.Tensor, "__matmul__", no_fp16)
    with pytest.raises(BenchError, match=r"pure_fp16 .* needs fp16 on cpu.*not implemented for 'Half'") as err:
        regime.cell_backbone(tiny_backbone, "pure_fp16", torch.device("cpu"))
    assert "\n" not in str(err.value)
    assert regime.cell_backbone(tiny_backbone, "auto", torch.device("cpu")) is tiny_backbone


def test_an_unknown_regime_is_refused_before_anything_runs(capsys):
    from bench.cli import main

    with pytest.raises(SystemExit):
        main(["plan", "--regime", "publishd"])
    assert "invalid choice: 'publishd'" in capsys.readouterr().err


# ---- benchmarks/published_regime.py: which cells each variant runs, and its intervals ----

def _published_benchmark():
    """The script's functions (run_path runs it under another name than __main__: its main does not run)."""
    import runpy
    from types import SimpleNamespace

    return SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" /
                                                 "published_regime.py")))


@pytest.mark.parametrize("method,datasets,fp16_alone,test_alone", [
    ("coop", ["mini_shapes"], True, False),
    ("promptsrc", ["mini_shapes"], True, False),
    ("lora", ["mini_shapes"], False, False),           # its published precision is fp16 autocast, not pure fp16
    ("tip_adapter_f", ["mini_shapes"], True, True),    # picks its epoch on the test set everywhere
    ("tip_adapter", ["mini_shapes"], True, False),
    ("tip_adapter", ["mini_shapes", "imagenet"], True, True),   # searches on the test set on ImageNet only
    ("clip_adapter", ["mini_shapes"], False, False),
])
def test_the_benchmark_runs_each_variant_only_where_the_published_regime_changes_it(method, datasets, fp16_alone,
                                                                                     test_alone):
    bench = _published_benchmark()
    assert bench.applies("pure fp16 alone", method, datasets) is fp16_alone
    assert bench.applies("test-set selection alone", method, datasets) is test_alone
    assert bench.applies("published", method, datasets)


def test_the_benchmark_interval_covers_a_known_difference_about_95_percent_of_the_time():
    """Simulated cells (a dataset effect shared by both runs, a true shift of +2 points, noise): the paired
    percentile bootstrap over 18 cells covers the true shift in about 95 % of repetitions (percentile intervals run
    a little short at n = 18, hence the lower bound), and its point estimate is the mean paired difference."""
    import numpy as np

    bench = _published_benchmark()
    rng = np.random.default_rng(0)
    covered, reps = 0, 200
    for _ in range(reps):
        level = rng.normal(60, 10, 18)
        a = [{"all": x} for x in level + rng.normal(0, 1, 18)]
        b = [{"all": x} for x in level + 2 + rng.normal(0, 1, 18)]
        d, lo, hi = bench.paired_interval("fewshot", a, b, resamples=400, seed=int(rng.integers(1 << 30)))
        assert d == pytest.approx(np.mean([y["all"] - x["all"] for x, y in zip(a, b)]))
        covered += lo <= 2 <= hi
    assert 0.85 <= covered / reps <= 0.99


# ---- the default regime is unchanged ----

DEFAULT_CELLS = ["coop", "kgcoop", "promptsrc", "tip_adapter_f", "clipfit", "zeroshot"]
# What the code before the regime and the GPU-speed work (commit 78d3407: `git archive 78d3407`, this file's
# default_cells run against it) gives on the tiny world: per cell, the accuracy of each evaluation and a sha256 of
# the trained tensors' names and bytes. The default regime, the op cuts of the training step (foreach optimizers,
# batched augmentation tail, device-side loss watch) and the schema-2 identity leave both unchanged; cell ids did
# change (schema 2), which tests/test_grid.py and test_verify.py cover.
BEFORE = Path(__file__).with_name("regime_default_before.json")


def default_cells(cache: Path) -> dict:
    """Run DEFAULT_CELLS (default regime) few-shot K=1 and base-to-new on the tiny world in `cache`."""
    import torch

    torch.set_num_threads(2)
    from bench.cli import main
    from bench.mini.world import TINY, ensure_world
    from bench.results import ResultStore

    world = ensure_world(cache, seed=0, config=TINY)
    r = cache / "results"
    for protocol in ("fewshot", "base2new"):
        code = main(["run", "--methods", ",".join(DEFAULT_CELLS), "--datasets", "mini_textures", "--data-root",
                     str(world.data_root), "--backbone", "bench-tiny", "--pretrained", "none", "--results", str(r),
                     "--protocol", protocol, "--shots", "1", "--seeds", "1", "--set", "epochs=2", "--set",
                     "batch_size=4", "--no-leaderboard"])
        assert code == 0
    out = {}
    for path, res in ResultStore(r).iter_results():
        cfg = res["config"]
        out[f"{cfg['method']}/{cfg['protocol']}"] = {
            "acc": {k: v["acc"] for k, v in res["metrics"].items()},
            "trainable_sha256": tensors_sha256(path.parent / "trainable.safetensors")}
    return out


def tensors_sha256(path: Path) -> str | None:
    """sha256 over the names and bytes of the tensors in a safetensors file (not the file: its metadata holds the
    cell id, which the schema-2 identity changed), None when there is none."""
    import hashlib

    from safetensors.torch import load_file

    if not path.is_file():
        return None
    h = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        h.update(name.encode() + str(tensor.dtype).encode() + tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_default_regime_cells_are_bit_identical_to_before(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    assert default_cells(tmp_path) == json.loads(BEFORE.read_text())


if __name__ == "__main__":
    import os

    os.environ["BENCH_CACHE"] = sys.argv[1]
    print(json.dumps(default_cells(Path(sys.argv[1])), indent=1, sort_keys=True))
