"""Fixtures for the training-loop tests: a tiny-model `TrainConfig` over the synth data.

Prompts are shortened (the tiny model's tokenizer is byte-level, so the default
templates alone are ~150 tokens) to keep each CPU step well under a second.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from train.testing import SHORT_PROMPTS, tiny_model_config
from train.train_config import TrainConfig

MakeConfig = Callable[..., TrainConfig]


@pytest.fixture
def one_thread():
    """Tiny models are latency bound: one intra-op thread is as fast and never stalls on a
    busy core (OpenMP threads spin-waiting on 2 shared cores cost seconds per step)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_config(synth_platform: Path, synth_pairs: Path, tmp_path: Path) -> MakeConfig:
    """`make_config(variant=..., out=..., **train_overrides)` -> a tiny, fast TrainConfig."""

    def make(variant: str = "notellm2", connector: str = "qformer", **overrides: Any) -> TrainConfig:
        model_overrides = overrides.pop("model", {})
        fields: dict[str, Any] = {
            "notes": str(synth_platform / "notes.parquet"),
            "images": str(synth_platform),
            "pairs": str(synth_pairs),
            "out": str(tmp_path / "run"),
            "model": tiny_model_config(
                variant=variant, connector=connector, **SHORT_PROMPTS, **model_overrides
            ),
            "lr": 1e-3,
            "pairs_per_step": 8,
            "max_steps": 4,
            "val_every": 2,
            "log_every": 1,
            "num_workers": 0,
            "val_max_queries": 8,
            "val_ks": (5, 10),
        }
        fields.update(overrides)
        return TrainConfig(**fields)

    return make
