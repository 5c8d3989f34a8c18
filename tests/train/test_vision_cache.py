"""The vision cache: the frozen encoder's output per note, once, gives the same training as
encoding both images of every pair at every step (an equivalence test, not a speed test)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from core.contracts import notes_to_dicts, read_notes
from train.data import ImageStatus, NoteImageLoader
from train.loop import train
from train.model import build_model
from train.testing import tiny_model_config
from train.vision_cache import VisionFeatureCache

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_cached_features_are_the_encoders_output(synth_platform: Path) -> None:
    model = build_model(tiny_model_config(variant="notellm2")).eval()
    notes = notes_to_dicts(read_notes(synth_platform / "notes.parquet"))[:5]
    notes.append(dict(notes[0], note_id="ghost", image="no/such.png"))
    images = NoteImageLoader(synth_platform, model.vision.transform)
    cache = VisionFeatureCache.build(model.vision, [*notes, notes[0]], images, batch_size=4)
    assert len(cache) == 6  # the repeated note is encoded once
    feats, status = cache(notes[1])
    pixels, _ = images(notes[1])
    with torch.no_grad():
        cls, tokens = model.vision(pixels[None])
    torch.testing.assert_close(feats, torch.cat([cls, tokens[0]]), atol=1e-5, rtol=1e-4)
    assert status == ImageStatus.LOADED and cache(notes[-1])[1] == ImageStatus.BROKEN
    # the model reads cached features exactly as it reads pixels
    with torch.no_grad():
        from_pixels = model(model.collate(notes[:2], torch.stack([images(n)[0] for n in notes[:2]])))
        from_cache = model(model.collate(notes[:2], torch.stack([cache(n)[0] for n in notes[:2]])))
    torch.testing.assert_close(from_cache.multimodal, from_pixels.multimodal, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(from_cache.visual, from_pixels.visual, atol=1e-5, rtol=1e-4)


def test_training_with_the_cache_equals_training_without(make_config, tmp_path: Path) -> None:
    losses = {}
    for cached in (True, False):
        out = tmp_path / f"cache-{cached}"
        console = Console(file=io.StringIO(), width=120)
        cfg = make_config(out=str(out), max_steps=3, val_every=3, cache_vision=cached)
        train(cfg, console)
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        losses[cached] = [r["loss"] for r in records if r.get("split") == "train"]
        assert ("vision cache:" in console.file.getvalue()) == cached
    assert len(losses[True]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-5)


def test_cache_over_budget_is_skipped(make_config, tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=200)
    cfg = make_config(out=str(tmp_path / "run"), max_steps=1, val_every=1, vision_cache_max_gb=1e-9)
    train(cfg, console)
    assert "vision cache off" in console.file.getvalue()
