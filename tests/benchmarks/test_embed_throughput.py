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
