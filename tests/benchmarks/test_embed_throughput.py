"""benchmarks/embed_throughput.py: how it scores bf16's effect on the vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import embed_throughput  # noqa: E402  (the script, from benchmarks/)


def _at(degrees: list[float]) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


def test_neighbour_overlap_counts_shared_top_k() -> None:
    a = _at([0, 10, 40, 90])  # nearest two: 0 -> {1, 2}, 1 -> {0, 2}, 2 -> {1, 0}, 3 -> {2, 1}
    b = _at([0, 10, 60, 90])  # nearest two: 0 -> {1, 2}, 1 -> {0, 2}, 2 -> {3, 1}, 3 -> {2, 1}
    assert embed_throughput.neighbour_overlap(a, a, k=2) == 1.0
    assert embed_throughput.neighbour_overlap(a, b, k=2) == (1 + 1 + 0.5 + 1) / 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    assert embed_throughput.neighbour_overlap(x, x + 1e-9, k=5) == 1.0  # far below the gaps


def test_gemm_gflops_counts_two_flops_per_multiply_add() -> None:
    """A product's rate is 2*m*k*n per call over the time: positive, finite, and a tiny
    product (all overhead) is slower per flop than a large one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny = embed_throughput.gemm_gflops(2, 2, 2, torch.float32, seconds=0.05)
        large = embed_throughput.gemm_gflops(256, 256, 256, torch.float32, seconds=0.2)
    finally:
        torch.set_num_threads(threads)
    assert 0 < tiny < large < 10_000
