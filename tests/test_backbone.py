"""Backbones load with the activation their weights were trained with, through open_clip's real loading code
(hub downloads stubbed with local files); custom architectures and open_clip's schemes work from the CLI."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from bench.backbone import _load, built_activation, load_backbone
from bench.backbone_spec import (
    display_backbone,
    resolve_backbone,
    sniff_weights,
    tag_quick_gelu,
    weights_label,
)
from bench.cli import main
from bench.errors import BenchError
from bench.grid import Grid, expand
from bench.results import ResultStore

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
FAST = ["--set", "epochs=2", "--set", "batch_size=8", "--no-leaderboard"]


def tower_activations(model) -> tuple[set, set]:
    """Activation classes used by the image tower and by the text tower."""
    def acts(module):
        return {type(m) for m in module.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}
    return acts(model.visual), acts(model.transformer)


@pytest.fixture(scope="module")
def vitb16_weights(tmp_path_factory):
    """A ViT-B-16 state dict (random, fp16 to halve the file) standing in for the hub's download."""
    from safetensors.torch import save_file

    model = open_clip.create_model("ViT-B-16")
    path = tmp_path_factory.mktemp("hub") / "open_clip_model.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def stub_hub(monkeypatch, vitb16_weights):
    """open_clip's download, answered by the local file (the rest of its loading path runs for real)."""
    asked = []

    def download(cfg, *args, **kwargs):
        asked.append(cfg)
        return str(vitb16_weights)

    monkeypatch.setattr(open_clip.factory, "download_pretrained", download)
    _load.cache_clear()
    yield asked
    _load.cache_clear()


def test_openai_tag_builds_quickgelu_in_both_towers(stub_hub):
    bb = load_backbone("ViT-B-16", "openai")
    assert stub_hub, "the hub download was not reached"
    image, text = tower_activations(bb.model)
    assert image == {QuickGELU} and text == {QuickGELU}
    assert bb.activation == "quick_gelu" and "quick_gelu" in bb.id


def test_laion_tag_whose_config_says_gelu_builds_gelu(stub_hub):
    assert open_clip.get_pretrained_cfg("ViT-B-16", "laion2b_s34b_b88k").get("quick_gelu", False) is False
    bb = load_backbone("ViT-B-16", "laion2b_s34b_b88k")
    assert tower_activations(bb.model) == ({torch.nn.GELU}, {torch.nn.GELU})


def test_quickgelu_architecture_with_a_state_dict(vitb16_weights):
    bb = load_backbone("ViT-B-16-quickgelu", str(vitb16_weights))
    assert tower_activations(bb.model) == ({QuickGELU}, {QuickGELU})
    assert resolve_backbone("ViT-B-16-quickgelu", str(vitb16_weights)).notice is None


def test_explicit_activation_wins_and_is_logged(stub_hub, caplog):
    bb = load_backbone("ViT-B-16", "openai", activation="gelu")
    assert built_activation(bb.model) == "gelu"
    assert "trained with quick_gelu" in caplog.text


def _tiny_quickgelu():
    open_clip.add_model_config(__import__("bench.backbone_spec").backbone_spec.CONFIG_DIR)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return open_clip.create_model("bench-tiny", quick_gelu=True).eval()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_torchscript_archive_builds_quickgelu_and_matches_the_saved_module(tmp_path):
    model = _tiny_quickgelu()
    tokens = open_clip.get_tokenizer("bench-tiny")(["a red square", "a blue circle"])
    images = torch.randn(2, 3, 32, 32)
    traced = torch.jit.trace_module(model, {"encode_image": (images,), "encode_text": (tokens,)}, check_trace=False)
    path = tmp_path / "ViT-tiny.pt"                      # OpenAI's releases are TorchScript archives like this
    torch.jit.save(traced, str(path))
    assert sniff_weights(path) == "torchscript"
    bb = load_backbone("bench-tiny", str(path))          # the architecture alone would say GELU
    assert bb.activation == "quick_gelu" and tower_activations(bb.model) == ({QuickGELU}, {QuickGELU})
    with torch.no_grad():
        assert torch.allclose(bb.model.encode_image(images), model.encode_image(images), atol=1e-6)
        assert torch.allclose(bb.model.encode_text(tokens), model.encode_text(tokens), atol=1e-6)


def test_openai_layout_state_dict_means_quickgelu_and_a_plain_one_gets_a_notice(tmp_path):
    state = _tiny_quickgelu().state_dict()
    plain, openai = tmp_path / "plain.pt", tmp_path / "openai.pt"
    torch.save(state, plain)
    torch.save({**state, "input_resolution": torch.tensor(32), "context_length": torch.tensor(24),
                "vocab_size": torch.tensor(49408)}, openai)
    assert load_backbone("bench-tiny", str(openai)).activation == "quick_gelu"
    spec = resolve_backbone("bench-tiny", str(plain))
    assert spec.activation == "gelu"
    assert "plain.pt does not say" in spec.notice and "--activation quick_gelu" in spec.notice


def test_bench_quickgelu_table_matches_the_installed_open_clip():
    from open_clip.pretrained import _PRETRAINED

    for arch, tags in _PRETRAINED.items():
        for tag, cfg in tags.items():
            assert tag_quick_gelu(arch, tag) == bool(cfg.get("quick_gelu", False)), (arch, tag)


def test_activation_is_in_the_cell_config_and_changes_the_cell_id(toy, tmp_path):
    base = dict(methods=["clipfit"], datasets=["toy"], shots=[1], seeds=[1], backbone="bench-tiny",
                pretrained=None, data_root=str(toy), sets={"epochs": 1})
    auto, quick = expand(Grid(**base))[0], expand(Grid(**base, activation="quick_gelu"))[0]
    assert auto["config"]["activation"] == "gelu" and quick["config"]["activation"] == "quick_gelu"
    assert auto["cell_id"] != quick["cell_id"]
    from bench.cell import run_cell

    res = run_cell(quick, tmp_path)
    assert res["status"] == "completed" and res["config"]["activation"] == "quick_gelu"


def test_labels_are_short():
    assert weights_label("/very/long/path/to/ViT-B-16.pt") == "ViT-B-16.pt"
    assert weights_label(None) == "random" and weights_label("openai") == "openai"
    assert display_backbone("ViT-B-16", "quick_gelu") == "ViT-B-16-quickgelu"
    assert display_backbone("ViT-B-16-quickgelu", "quick_gelu") == "ViT-B-16-quickgelu"
    assert display_backbone("local-dir:/a/b/my-clip", "gelu") == "local-dir:my-clip"


def _arch_and_weights(tmp_path):
    arch = tmp_path / "my-arch.json"
    arch.write_text(json.dumps(TINY))
    weights = tmp_path / "my-weights.pt"
    with torch.random.fork_rng():
        torch.manual_seed(5)
        torch.save(open_clip.CLIP(**TINY).state_dict(), weights)
    return arch, weights


def test_json_architecture_file_runs_locally_and_on_gpu_workers(toy, tmp_path):
    arch, weights = _arch_and_weights(tmp_path)
    r = tmp_path / "r"
    common = ["run", "--backbone", str(arch), "--pretrained", str(weights), "--datasets", "toy", "--data-root",
              str(toy), "--shots", "1", "--seeds", "1", "--results", str(r), *FAST]
    assert main([*common, "--methods", "zeroshot,clipfit"]) == 0
    assert main([*common, "--methods", "coop", "--gpus", "0"]) == 0       # a worker process: config travels
    results = [res for _, res in ResultStore(r).iter_results()]
    assert len(results) == 3 and all(res["status"] == "completed" for res in results)
    assert all(res["config"]["backbone"] == "my-arch" and res["config"]["backbone_config"] == TINY
               for res in results)
    assert main(["leaderboard", str(r)]) == 0
    board = (r / "LEADERBOARD.md").read_text()
    assert "my-arch/my-weights.pt" in board and str(tmp_path) not in board


def test_a_planned_cell_needs_no_architecture_file(toy, tmp_path):
    """What SLURM tasks and --gpus workers rely on: the architecture travels inside the cell."""
    from bench.cell import run_cell

    arch, weights = _arch_and_weights(tmp_path)
    (cell,) = expand(Grid(methods=["clipfit"], datasets=["toy"], shots=[1], seeds=[1], backbone=str(arch),
                          pretrained=str(weights), data_root=str(toy), sets={"epochs": 1}))
    arch.unlink()
    _load.cache_clear()
    assert run_cell(cell, tmp_path / "r")["status"] == "completed"


def test_a_json_architecture_named_like_a_builtin_must_match_it(tmp_path):
    (tmp_path / "ViT-B-16.json").write_text(json.dumps(TINY))
    with pytest.raises(BenchError, match="named like the built-in 'ViT-B-16'"):
        resolve_backbone(str(tmp_path / "ViT-B-16.json"), None)


def test_local_dir_scheme_loads_config_and_weights(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "my-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {**TINY, "quick_gelu": True}}))
    with torch.random.fork_rng():
        torch.manual_seed(7)
        model = open_clip.CLIP(**TINY, quick_gelu=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    bb = load_backbone(f"local-dir:{folder}")
    assert bb.activation == "quick_gelu" and bb.spec.label == "local-dir:my-clip"
    assert torch.equal(bb.model.positional_embedding, model.positional_embedding)
    with pytest.raises(BenchError, match="brings its own weights"):
        resolve_backbone(f"local-dir:{folder}", "openai")


def test_hf_hub_offline_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchError, match="hf-hub:nobody/nothing: cannot get open_clip_config.json"):
        resolve_backbone("hf-hub:nobody/nothing", None)


def test_unknown_backbone_and_activation_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match="did you mean 'ViT-B-16'"):
        resolve_backbone("ViT-B-61", "openai")
    with pytest.raises(BenchError, match="activation 'quickgelu'"):
        resolve_backbone("ViT-B-16", "openai", "quickgelu")
    with pytest.raises(BenchError, match="does not exist"):
        resolve_backbone(str(tmp_path / "nope.json"), None)


def test_ls_backbones_names_the_accepted_forms(capsys):
    assert main(["ls", "backbones"]) == 0
    out = capsys.readouterr().out
    assert "bench-tiny" in out and "ViT-B-16" in out and "local-dir:" in out and "hf-hub:" in out and ".json" in out


def _import_graph() -> dict[str, set[str]]:
    """bench's modules → the bench modules each imports anywhere in its body (lazy imports included)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "bench").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                deps |= {base} | {f"{base}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def test_the_backbone_door_does_not_know_the_mini_world():
    """backbone → mini/world → mini/pretrain → backbone was a cycle: now nothing bench.backbone(_spec) imports,
    however indirectly, leads back to it, and neither names the mini world's modules."""
    graph = _import_graph()
    for door in ("bench.backbone", "bench.backbone_spec"):
        assert not any(d.startswith("bench.mini") for d in graph[door]), graph[door]
        seen, todo = set(), list(graph[door])
        while todo:
            mod = todo.pop()
            if mod not in seen:
                seen.add(mod)
                todo.extend(graph[mod])
        assert door not in seen, f"{door} imports itself through {sorted(seen)}"


def test_named_weights_resolve_through_their_provider(tmp_path):
    """A provider registers a name and how it resolves; the door loads what it returns (the mini world does this
    for `mini-world` when bench.mini is imported)."""
    import bench.mini  # noqa: F401  (the mini world registers its name on import)
    from bench.backbone_spec import NAMED_WEIGHTS, is_named_weights, register_named_weights

    source = open_clip.create_model("bench-tiny")
    torch.nn.init.normal_(source.text_projection, std=0.5)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    asked = []
    register_named_weights("test-weights", lambda: asked.append(1) or path)
    try:
        assert is_named_weights("test-weights") and is_named_weights("mini-world")
        spec = resolve_backbone("bench-tiny", "test-weights")
        assert spec.pretrained == "test-weights" and not asked          # resolving names nothing on disk
        _load.cache_clear()
        bb = load_backbone("bench-tiny", "test-weights")
        assert asked == [1] and torch.equal(bb.model.text_projection, source.text_projection)
    finally:
        NAMED_WEIGHTS._targets.pop("test-weights", None)
        _load.cache_clear()
    with pytest.raises(BenchError, match="pretrained tag for bench-tiny 'test-weights' is unknown"):
        load_backbone("bench-tiny", "test-weights")
