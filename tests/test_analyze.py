"""bench analyze: relative change, linear CKA, LoRA's merged-weight change, and the report end to end."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.analysis.analyze import locate, parameter_changes, relative_change
from bench.analysis.drift import linear_cka


def test_relative_change_untouched_is_exactly_zero():
    t = torch.randn(7, 5)
    assert relative_change(t, t.clone()) == 0.0
    assert relative_change(torch.zeros(3), torch.zeros(3)) == 0.0
    assert relative_change(torch.ones(4) * 1.5, torch.ones(4)) == pytest.approx(0.5)
    assert relative_change(torch.ones(2), torch.zeros(2)) == math.inf


def test_linear_cka_identity_orthogonal_and_scale_invariance():
    rng = np.random.default_rng(0)
    for n, d in ((50, 12), (8, 40)):                 # feature-space and Gram-matrix code paths
        x = rng.normal(size=(n, d))
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
        assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)
        assert linear_cka(x, 3.7 * x) == pytest.approx(1.0, abs=1e-12)
        assert linear_cka(x, x + 5.0) == pytest.approx(1.0, abs=1e-9)          # centring
        assert linear_cka(torch.tensor(x), torch.tensor(x @ q)) == pytest.approx(1.0, abs=1e-9)
    x, y = rng.normal(size=(200, 10)), rng.normal(size=(200, 10))
    assert linear_cka(x, y) < 0.2
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert math.isnan(linear_cka(np.ones((5, 3)), x[:5]))


def test_lora_change_is_on_the_merged_weight():
    from bench.methods.lora_layers import LoRALinear

    torch.manual_seed(0)
    w = torch.randn(6, 4)
    holder = nn.Module()
    holder.q = LoRALinear(w, None, r=2, alpha=1.0, dropout=0.0)
    holder.q.lora_A.requires_grad_(True)
    holder.q.lora_B.requires_grad_(True)
    theta0 = {n: p.detach().clone() for n, p in holder.named_parameters() if p.requires_grad}
    merged0 = {"q": holder.q.merged_weight().detach().clone()}
    assert torch.equal(merged0["q"], w)                                          # B = 0 at init
    a, b = torch.randn(2, 4), torch.randn(6, 2)
    with torch.no_grad():
        holder.q.lora_A.copy_(a)
        holder.q.lora_B.copy_(b)
    theta = {n: p.detach().clone() for n, p in holder.named_parameters() if p.requires_grad}
    changes = parameter_changes(holder, theta0, theta, merged0)
    assert set(changes) == {"q.weight"}                                          # lora_A/B folded into one row
    expected = float((holder.q.scaling * b @ a).norm() / w.norm())
    assert changes["q.weight"]["rel"] == pytest.approx(expected, rel=1e-6)
    assert "merged" in changes["q.weight"]["kind"]


@pytest.mark.parametrize("name,where", [
    ("clip.transformer.resblocks.3.mlp.c_proj.bias", ("text", "3", "mlp.c_proj.bias")),
    ("clip.visual.transformer.resblocks.0.attn.q.weight", ("image", "0", "attn.q.weight")),
    ("clip.visual.ln_pre.weight", ("image", "pre", "ln_pre.weight")),
    ("clip.visual.ln_post.bias", ("image", "post", "ln_post.bias")),
    ("clip.ln_final.weight", ("text", "post", "ln_final.weight")),
    ("clip.token_embedding.weight", ("text", "pre", "token_embedding.weight")),
    ("ctx", ("text", "pre", "ctx (prompt context)")),
    ("adapter.0.weight", ("other", "-", "adapter.0.weight")),
    ("clip.logit_scale", ("other", "-", "logit_scale")),
])
def test_locate(name, where):
    assert locate(name) == where


def test_analyze_end_to_end(toy, tmp_path, capsys):
    import bench.cli.analyze as verb
    from bench.analysis.analyze import analyze
    from bench.cell import run_cell
    from bench.grid import Grid, expand

    torch.set_num_threads(2)
    results = tmp_path / "results"
    cells = expand(Grid(methods=["clipfit", "coop", "lora"], datasets=["toy"], shots=[2], seeds=[1, 2],
                        backbone="bench-tiny", pretrained=None, data_root=str(toy),
                        sets={"epochs": 2, "iters_per_shot": 2}))
    for cell in cells:
        assert run_cell(cell, results)["status"] == "completed"
    report = analyze(results, data_root=toy, samples=12)
    assert report.path == results / "analysis" / "ANALYSIS.md"
    text = report.path.read_text()
    for stem in ("change-clipfit", "change-coop", "change-lora", "drift-clipfit", "drift-coop", "drift-lora",
                 "drift-all"):
        assert (results / "analysis" / f"{stem}.png").stat().st_size > 1000
        assert f"({stem}.png)" in text
    assert "## Summary" in text and "**ClipFit**" in text and "**CoOp**" in text and "**CLIP-LoRA**" in text
    by = {}
    for cell in report.cells:
        by.setdefault(cell.result["config"]["method"], []).append(cell)
    assert {m: len(v) for m, v in by.items()} == {"clipfit": 2, "coop": 2, "lora": 2}
    for cell in by["clipfit"]:
        names = set(cell.changes)
        assert all(n.endswith("mlp.c_proj.bias") or (n.startswith("clip.visual.") and ".ln" in n) for n in names)
        assert any(n.startswith("clip.transformer.") for n in names) and "clip.visual.ln_pre.weight" in names
        assert all(r["rel"] > 0 for r in cell.changes.values())
        assert cell.drift["image_cka"] and cell.drift["text_cka"]
    for cell in by["coop"]:
        assert set(cell.changes) == {"ctx"} and 0 < cell.changes["ctx"]["rel"] < 0.5     # a wrong θ₀ gives ≈ √2
        assert all(v == pytest.approx(1.0) for v in cell.drift["image_cka"])     # frozen image tower
        assert cell.drift["image_cos"] == pytest.approx(1.0)
    from bench.backbone import _load

    _load.cache_clear()              # θ₀ must not depend on whether the backbone was already built in-process
    fresh = analyze(results, data_root=toy, methods=["coop"], samples=0, out=tmp_path / "fresh")
    assert [c.changes["ctx"]["rel"] for c in fresh.cells] == [c.changes["ctx"]["rel"] for c in by["coop"]]
    for cell in by["lora"]:
        assert not any("lora_" in n for n in cell.changes)
        assert len(cell.changes) == 2 * 2 * 3                                    # 2 towers × 2 blocks × q/k/v
        assert all(0 < r["rel"] < math.inf and "merged" in r["kind"] for r in cell.changes.values())
    for cell in report.cells:
        d = cell.drift
        assert len(d["image_cka"]) == 2 and len(d["text_cka"]) == 2
        assert all(0 <= v <= 1 for v in d["image_cka"] + d["text_cka"])
        assert -1 <= d["image_cos"] <= 1.0 + 1e-9 and -1 <= d["text_cos"] <= 1.0 + 1e-9

    parser = argparse.ArgumentParser()
    verb.add_arguments(parser)
    out = tmp_path / "only-coop"
    args = parser.parse_args([str(results), "--methods", "coop", "--data-root", str(toy), "--samples", "0",
                              "--out", str(out)])
    assert verb.execute(args) == 0
    assert "analysed 2 cell(s)" in capsys.readouterr().out
    assert (out / "change-coop.png").is_file() and not (out / "drift-coop.png").exists()
    assert "**ClipFit**" not in (out / "ANALYSIS.md").read_text()


def test_analyze_errors_are_one_line(toy, tmp_path, monkeypatch):
    from bench.analysis.analyze import analyze
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="not a results tree"):
        analyze(tmp_path / "nothing", data_root=toy)
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    with pytest.raises(BenchError, match="no completed cell"):
        analyze(tmp_path / "empty", data_root=toy)
    with pytest.raises(BenchError, match="does not exist"):
        analyze(tmp_path / "empty", data_root=tmp_path / "missing")
    import sys
    import types

    monkeypatch.setitem(sys.modules, "bench.mini.world", types.SimpleNamespace(find_world=lambda: None))
    with pytest.raises(BenchError, match="no data root: pass --data-root"):
        analyze(tmp_path / "empty")
