"""Test set-up: offline, CPU-only, 2 threads; a tiny generated CoOp-layout world per test that needs one."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENCH_DECODE_CACHE", tempfile.mkdtemp(prefix="bench-test-decoded-"))   # never ~/.cache
os.environ.setdefault("BENCH_LOG_LEVEL", "WARNING")
os.environ.setdefault("BENCH_WORKERS", "1")   # cells in the test's process (its monkeypatches reach them); test_packing runs workers
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
from toydata import make_toy_world  # noqa: E402


def pytest_configure(config):
    """CPU-only unless the GPU tests were asked for (`pytest -m gpu`)."""
    expr = config.getoption("markexpr") or ""
    if "gpu" not in expr or "not gpu" in expr:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


@pytest.fixture(autouse=True)
def _isolated_cards(monkeypatch):
    """Every test starts with the shipped cards only (tests that add cards set BENCH_CARDS_PATH)."""
    from bench import cards

    monkeypatch.delenv("BENCH_CARDS_PATH", raising=False)
    cards.clear_caches()
    yield
    cards.clear_caches()


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A generated world: data root with datasets toy (5 classes) and toy2 (3), their cards, suite 'toy'."""
    from bench import cards

    data, cards_root = make_toy_world(tmp_path)
    monkeypatch.setenv("BENCH_CARDS_PATH", str(cards_root))
    cards.clear_caches()
    from bench import grid

    grid.dataset_splits.cache_clear()
    return data


@pytest.fixture(scope="session")
def tiny_backbone():
    import torch

    torch.set_num_threads(2)
    from bench.backbone import load_backbone

    return load_backbone("bench-tiny", None)
