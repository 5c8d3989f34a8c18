"""Shared fixtures: a tiny synthetic platform and the pairs mined from it.

`synth_platform` is a directory laid out like `i2i synth` output (notes.parquet with
image paths relative to it, images/, logs/, truth.parquet); `synth_pairs` is a
`mine-pairs` output directory over its logs ({train,val,test}.parquet, summary.json).
Both are built once per test session (about a second) and must not be modified.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.mine import mine_pairs, write_pairs
from pipeline.synth import generate_platform

# Tiny but structured: 120 notes, 4 topics x 4 motifs, 60 users over 7 days.
SYNTH_ARGS = {"notes": 120, "users": 60, "days": 7, "events": 4000, "image_size": 32, "seed": 0}
# Session-level window and a split that leaves val/test pairs for tiny evaluations.
PAIRS_ARGS = {"window": "1h", "split": (0.6, 0.2, 0.2), "top_k": 50, "seed": 0}


@pytest.fixture(scope="session")
def synth_platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny generated platform (notes.parquet, images/, logs/, truth.parquet)."""
    out = tmp_path_factory.mktemp("synth") / "platform"
    generate_platform(out, **SYNTH_ARGS)
    return out


@pytest.fixture(scope="session")
def synth_pairs(synth_platform: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the mine-pairs output over `synth_platform`'s logs."""
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    write_pairs(mine_pairs(synth_platform / "logs", **PAIRS_ARGS), out)
    return out
