"""The image-only baseline and the blanked embedder keep the `Embedder.embed` contract:
decoded `images` instead of paths, one `image_status` per note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.images import load_image
from retriever.baselines import BlankedEmbedder, VisionFeatureEmbedder
from train.embed import NoteEmbedder
from train.model import build_model
from train.presets import TINY_VISION
from train.testing import single_thread, tiny_model_config, tiny_notes
from train.vision import build_vision


def _notes_with_images(root: Path) -> list[dict]:
    notes = tiny_notes(4)
    for i in range(2):
        Image.new("RGB", (24, 20), (90 * i, 40, 200)).save(root / f"{i}.png")
    (root / "bad.png").write_bytes(b"not an image")
    for note, image in zip(notes, ["0.png", "1.png", "bad.png", None], strict=True):
        note["image"] = image
    return notes


def test_image_only_embedder_reports_statuses_and_takes_decoded_images(tmp_path: Path, monkeypatch) -> None:
    import core.images

    notes = _notes_with_images(tmp_path)
    with single_thread():
        torch.manual_seed(0)
        emb = VisionFeatureEmbedder(build_vision("open_clip", TINY_VISION), "tiny-vision", device="cpu")
        status: list[str] = []
        from_paths = emb.embed(notes, image_root=tmp_path, batch_size=3, image_status=status)
        assert status == ["ok", "ok", "unreadable", "none"] and emb.broken_images == 1
        decoded = [load_image(tmp_path / f"{i}.png")[0] for i in range(2)]

        def no_decode(*args, **kwargs):
            raise AssertionError("an image path was opened although the images were given")

        monkeypatch.setattr(core.images, "load_image", no_decode)
        status = []
        given = emb.embed(notes, batch_size=3, images=[*decoded, None, None], image_status=status)
    assert status == ["ok", "ok", "none", "none"]
    np.testing.assert_allclose(given, from_paths, atol=1e-5)  # a broken image embeds as the blank one


def test_blanked_embedder_passes_images_and_statuses_through(tmp_path: Path) -> None:
    notes = _notes_with_images(tmp_path)
    with single_thread():
        torch.manual_seed(0)
        inner = NoteEmbedder(build_model(tiny_model_config()), device="cpu")
        status: list[str] = []
        BlankedEmbedder(inner, "image").embed(notes, image_root=tmp_path, image_status=status)
        assert status == ["blanked"] * 4
        status = []
        decoded = [load_image(tmp_path / "0.png")[0], None, None, None]
        no_text = BlankedEmbedder(inner, "text").embed(notes, images=decoded, image_status=status)
    assert status == ["ok", "none", "none", "none"]
    np.testing.assert_allclose(no_text[1], no_text[3], atol=1e-5)  # no text, no image: alike
