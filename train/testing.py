"""Tiny random NoteLLM-2 configs for tests (any engineer's): no downloads, fast builds.

    model = build_model(tiny_model_config(variant="notellm2", connector="qformer"))

LLM: a 2-layer Llama (hidden 64) with the in-memory byte-level tokenizer (pad == EOS);
vision: a 2-layer open_clip ViT (width 64, 64 px, 16 patches); Q-Former: 2 layers,
hidden 64; head dim 16. `tiny_notes` and `tiny_pixels` give matching inputs.

`single_thread()` runs torch on one thread: tiny ops gain nothing from a second one,
and on a shared, loaded machine each multi-threaded op waits for a free core
(measured: a tiny forward + backward 0.15 s on one thread vs 1-5 s on two under load).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from core.contracts import Note
from train.data import ImageStatus, PairSplit
from train.model_config import ModelConfig
from train.presets import TINY_LLM, TINY_VISION, preset
from train.vision_cache import VisionFeatureCache

__all__ = [
    "TINY_LLM",
    "TINY_VISION",
    "clustered_image_split",
    "single_thread",
    "tiny_model_config",
    "tiny_notes",
    "tiny_pixels",
]


# Short prompt templates and limits for tiny-model training runs: the tiny model's
# tokenizer is byte-level, so the default templates alone are ~150 tokens; these keep each
# CPU step well under a second (the training tests, tests/benchmarks).
SHORT_PROMPTS: dict[str, Any] = {
    "prompt_text": '{title} {tags} {content}"',
    "prompt_basic": '<IMG> {title} {tags} {content}"',
    "prompt_micl": '<IMG>"<IMG_EMB>" {title} {tags} {content}"',
    "title_max": 24,
    "content_max": 48,
    "max_tags": 3,
}


def tiny_model_config(variant: str = "notellm2", connector: str = "qformer", **overrides: Any) -> ModelConfig:
    """The `tiny` preset (`train.presets`): a tiny random model that builds in well under a second."""
    return preset("tiny", variant=variant, connector=connector, **overrides)


def tiny_notes(n: int = 4) -> list[Note]:
    """`n` small notes of varied length (so batches are padded)."""
    words = ["red", "bike", "sunset", "pasta", "garden", "mountain", "cat", "coffee"]
    return [
        {
            "note_id": f"n{i}",
            "title": f"{words[i % 8]} {words[(i + 3) % 8]}",
            "content": " ".join(words[: 1 + (i * 3) % 8]) + f" #tag{i % 3}#",
            "tags": [words[(i + 1) % 8]],
            "image": None,
        }
        for i in range(n)
    ]


def tiny_pixels(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Random normalised pixels (n, 3, size, size)."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread inside the block (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def clustered_image_split(
    groups: int = 6, per_group: int = 10, width: int = 64, seed: int = 0, signal: float = 0.5
) -> tuple[PairSplit, VisionFeatureCache, np.ndarray]:
    """Notes whose cached image features (`[cls; 4 tokens]`, width `width`, the tiny
    vision tower's) are their group's direction buried in noise, with every pair within a
    group: a split where the image says who is co-viewed and the (empty) text does not.
    `signal` scales the group's direction against unit noise.
    Returns (split, vision cache, group of each note)."""
    rng = np.random.default_rng(seed)
    n = groups * per_group
    group = np.repeat(np.arange(groups), per_group)
    centres = rng.normal(size=(groups, width))
    cls = signal * centres[group] + rng.normal(size=(n, width))  # 0.5: weak signal, strong noise
    tokens = rng.normal(size=(n, 4, width))
    features = torch.tensor(np.concatenate([cls[:, None], tokens], axis=1), dtype=torch.float32)
    notes: list[Note] = [
        {"note_id": f"n{i}", "title": "", "content": "", "tags": [], "image": None} for i in range(n)
    ]
    q, t = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    keep = (q != t) & (group[q] == group[t])
    split = PairSplit(
        notes=notes,
        query=q[keep].astype(np.int64),
        target=t[keep].astype(np.int64),
        rank=np.ones(int(keep.sum()), np.int64),
        pairs_read=int(keep.sum()),
        dropped_missing_note=0,
        dropped_self_pair=0,
    )
    cache = VisionFeatureCache(
        features, np.full(n, int(ImageStatus.LOADED), np.int8), {f"n{i}": i for i in range(n)}
    )
    return split, cache, group
