"""The GPU check (`pytest -m gpu -s`): benchmarks/gpu_check.py on one CUDA device — every method × protocol ×
precision on ViT-B-16, then the bf16 throughput table. Deselected by default; a CPU smoke run keeps the script
itself from rotting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.gpu
def test_gpu_check_on_vit_b16():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=900)
    print(out.stdout[-6000:], out.stderr[-3000:])
    assert out.returncode == 0 and "0 failed cell(s)" in out.stdout
    assert "cuda:0" in out.stdout


def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--backbone", "bench-tiny", "--precisions", "bf16",
                          "--methods", "zeroshot,coop,linear_probe", "--classes", "10", "--batch", "8",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "0 failed cell(s)" in out.stdout
    for protocol in ("fewshot", "base2new", "xd", "dg"):
        assert f"| bf16        | {protocol}" in out.stdout
    assert "| coop " in out.stdout and "images/s" in out.stdout
