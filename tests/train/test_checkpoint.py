"""Checkpoints: a directory alone rebuilds the model; embeddings are identical after a
round trip; no pickle; stable ids; atomic replacement."""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import UserError
from train.checkpoint import checkpoint_id, load_checkpoint, load_extra, save_checkpoint
from train.model import build_model
from train.testing import single_thread, tiny_model_config, tiny_notes, tiny_pixels


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.mark.parametrize(
    ("variant", "connector"), [("notellm2", "qformer"), ("late-fusion", "mlp"), ("text-only", "qformer")]
)
def test_round_trip_gives_identical_embeddings(tmp_path, variant: str, connector: str) -> None:
    torch.manual_seed(1)
    model = build_model(tiny_model_config(variant=variant, connector=connector, padding_side="left"))
    with torch.no_grad():  # move the temperature off its init so it is checked too
        model.temperature.add_(0.5)
    model.eval()
    save_checkpoint(model, tmp_path / "ckpt", extra={"step": 7})
    back = load_checkpoint(tmp_path / "ckpt")
    assert not back.training
    assert back.config == model.config
    assert back.tokenizer.padding_side == "left"
    notes, pixels = tiny_notes(4), tiny_pixels(4)
    with torch.no_grad():
        a = model(model.collate(notes, pixels))
        b = back(back.collate(notes, pixels))
    assert torch.equal(a.multimodal, b.multimodal)
    if a.visual is not None:
        assert torch.equal(a.visual, b.visual)
    assert torch.equal(back.logit_scale, model.logit_scale)
    assert load_extra(tmp_path / "ckpt") == {"step": 7}
    files = {p.name for p in (tmp_path / "ckpt").rglob("*")}
    assert "model.safetensors" in files and not any(n.endswith((".pt", ".pkl", ".bin")) for n in files)


def test_checkpoint_id_is_stable_and_tracks_weights(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config())
    save_checkpoint(model, tmp_path / "a")
    save_checkpoint(model, tmp_path / "b")
    first = checkpoint_id(tmp_path / "a")
    assert first.startswith("notellm2-") and first == checkpoint_id(tmp_path / "b")
    (tmp_path / "a" / "manifest.json").unlink()  # recomputed from the files when absent
    assert checkpoint_id(tmp_path / "a") == first
    with torch.no_grad():
        model.head.weight.add_(1.0)
    save_checkpoint(model, tmp_path / "a")  # replaces the old checkpoint atomically
    assert checkpoint_id(tmp_path / "a") != first
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["id"] == checkpoint_id(tmp_path / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporaries left


def test_not_a_checkpoint(tmp_path) -> None:
    with pytest.raises(UserError, match="not a NoteLLM-2 checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(UserError, match="not a NoteLLM-2 checkpoint"):
        checkpoint_id(tmp_path)


def test_load_to_dtype(tmp_path) -> None:
    model = build_model(tiny_model_config(variant="basic"))
    save_checkpoint(model, tmp_path / "c")
    back = load_checkpoint(tmp_path / "c", device="cpu", dtype=torch.bfloat16)
    assert back.head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        out = back(back.collate(tiny_notes(2), tiny_pixels(2)))
    assert out.multimodal.dtype == torch.float32
    torch.testing.assert_close(out.multimodal.norm(dim=-1), torch.ones(2))


def test_round_trip_named_open_clip_tower(tmp_path) -> None:
    """A named open_clip encoder is rebuilt architecture-only, then its saved weights load."""
    torch.manual_seed(0)
    cfg = tiny_model_config(
        variant="late-fusion", connector="mlp", vision="open_clip:ViT-S-32", vision_config=None
    )
    model = build_model(cfg).eval()
    save_checkpoint(model, tmp_path / "ckpt")
    torch.manual_seed(123)  # a different random init must not matter
    back = load_checkpoint(tmp_path / "ckpt")
    notes = tiny_notes(2)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(
            model(model.collate(notes, pixels)).multimodal, back(back.collate(notes, pixels)).multimodal
        )


def test_round_trip_efficientnet_stem_colour(tmp_path) -> None:
    """`efficientnet-lite0+stem`: the connector and late fusion take its 1344-wide features,
    and a checkpoint rebuilds it without the pretrained weights package being asked."""
    cfg = tiny_model_config(variant="notellm2", vision="efficientnet-lite0+stem", vision_config=None)
    model = build_model(cfg).eval()
    assert model.vision.width == 1344 and model.fusion.vision_proj.in_features == 1344
    save_checkpoint(model, tmp_path / "ckpt")
    back = load_checkpoint(tmp_path / "ckpt")
    assert back.config.vision == "efficientnet-lite0+stem" and back.vision.stem_colour
    notes = tiny_notes(2)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(model.collate(notes, pixels)), back(back.collate(notes, pixels))
    assert torch.equal(a.multimodal, b.multimodal) and torch.equal(a.visual, b.visual)
