"""NoteEmbedder: normalised float32 rows in input order, images counted, modalities blanked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.contracts import Embedder
from core.errors import UserError
from train.checkpoint import checkpoint_id, save_checkpoint
from train.embed import NoteEmbedder, embed_notes_modality
from train.model import build_model
from train.testing import single_thread, tiny_model_config, tiny_notes


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    notes = tiny_notes(7)
    for i, note in enumerate(notes):
        arr = rng.integers(0, 255, size=(40 + 8 * i, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"{i}.png")
        note["image"] = f"{i}.png"
    (root / "5.png").write_bytes(b"not a png")  # broken
    notes[6]["image"] = "missing.png"
    return notes, root


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_model_config(variant="notellm2")).eval()


def test_embed_is_ordered_normalised_float32(model, corpus) -> None:
    notes, root = corpus
    emb = NoteEmbedder(model, device="cpu")
    assert isinstance(emb, Embedder) and emb.dim == 16 and emb.model_id.startswith("notellm2-mem-")
    out = emb.embed(notes, image_root=root, batch_size=3)
    assert out.shape == (7, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    solo = np.concatenate([emb.embed([n], image_root=root) for n in notes])
    np.testing.assert_allclose(out, solo, atol=1e-5)  # batching and sorting do not change rows
    assert emb.broken_images == 2 and emb.missing_images == 2  # 5.png and missing.png, twice
    assert emb.embed([], image_root=root).shape == (0, 16)


def test_blank_modalities(model, corpus) -> None:
    notes, root = corpus
    emb = NoteEmbedder(model, device="cpu")
    full = emb.embed(notes, image_root=root)
    no_text = embed_notes_modality(emb, notes, "text", image_root=root)
    no_image = embed_notes_modality(emb, notes, "image", image_root=root)
    assert not np.allclose(full, no_text, atol=1e-4) and not np.allclose(full, no_image, atol=1e-4)
    # text blanked: two notes with the same image embed identically whatever their text
    twin = [dict(notes[0], title="other", content="words"), notes[0]]
    a = emb.embed(twin, image_root=root, blank="text")
    np.testing.assert_allclose(a[0], a[1], atol=1e-5)
    by_default = NoteEmbedder(model, device="cpu", blank="text").embed(notes, image_root=root)
    np.testing.assert_allclose(by_default, no_text, atol=1e-6)
    with pytest.raises(UserError, match="unknown blank"):
        emb.embed(notes, blank="audio")


def test_embedder_from_checkpoint_dir(tmp_path, model, corpus) -> None:
    notes, root = corpus
    save_checkpoint(model, tmp_path / "ckpt")
    from_dir = NoteEmbedder(tmp_path / "ckpt", device="cpu")
    assert from_dir.model_id == checkpoint_id(tmp_path / "ckpt")
    np.testing.assert_array_equal(
        from_dir.embed(notes, image_root=root),
        NoteEmbedder(model, device="cpu").embed(notes, image_root=root),
    )


def test_text_only_ignores_images(corpus) -> None:
    notes, root = corpus
    emb = NoteEmbedder(build_model(tiny_model_config(variant="text-only")), device="cpu")
    out = emb.embed(notes, image_root=root, batch_size=4)
    assert out.shape == (7, 16) and emb.broken_images == 0 and emb.missing_images == 0
    # Two batchings (4 vs the default) pad differently, so matmul blocking differs: compare
    # with a tolerance that holds across CPUs (AMD EPYC failed 1e-8), not bit-exactly.
    np.testing.assert_allclose(out, emb.embed(notes, image_root=root, blank="image"), atol=1e-5)


def test_embed_keeps_training_mode(model) -> None:
    model.train()
    NoteEmbedder(model, device="cpu").embed(tiny_notes(2))
    assert model.training and not model.vision.training
    model.eval()


def test_blanked_embedder_has_its_own_model_id() -> None:
    from train.embed import NoteEmbedder
    from train.model import build_model
    from train.testing import tiny_model_config

    model = build_model(tiny_model_config())
    plain, blanked = NoteEmbedder(model), NoteEmbedder(model, blank="image")
    assert blanked.model_id == f"{plain.model_id}+blank-image"


def test_image_status_and_decoded_images_share_one_embed(model, corpus, monkeypatch) -> None:
    """One signature for both callers: `i2i index` reads each note's image status from
    the call that decoded it; `i2i serve` passes decoded images and no file is opened."""
    import core.images
    from core.images import load_image

    notes, root = corpus
    emb = NoteEmbedder(model, device="cpu")
    status: list[str] = []
    from_paths = emb.embed(notes, image_root=root, batch_size=3, image_status=status)
    assert status == ["ok"] * 5 + ["unreadable", "missing"]  # in input order, not batch order
    no_image = dict(notes[0], image=None)
    status = []
    emb.embed([no_image], image_root=root, image_status=status)
    assert status == ["none"]
    status = []
    emb.embed(notes[:2], image_root=root, blank="image", image_status=status)
    assert status == ["blanked", "blanked"]

    decoded = [load_image(root / f"{i}.png")[0] for i in range(5)]

    def no_decode(*args, **kwargs):
        raise AssertionError("an image path was opened although the images were given")

    monkeypatch.setattr(core.images, "load_image", no_decode)
    status = []
    given = emb.embed([*notes[:5], no_image], batch_size=3, images=[*decoded, None], image_status=status)
    assert status == ["ok"] * 5 + ["none"]
    np.testing.assert_allclose(given[:5], from_paths[:5], atol=1e-5)
    with pytest.raises(ValueError, match="1 images for 2 notes"):
        emb.embed(notes[:2], images=[None])

    text_only = NoteEmbedder(build_model(tiny_model_config(variant="text-only")), device="cpu")
    status = []
    text_only.embed(notes, image_root=root, image_status=status)
    assert status == []  # reads no image: the caller checks images itself


def test_precision_bf16_rounds_within_bf16_of_fp32(model, corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    """`precision="bf16"` embeds under bf16 autocast (emulated on CPUs without native bf16,
    so this runs anywhere): the rows differ from fp32's by bf16 rounding only, and stay
    normalised float32 in input order."""
    notes, root = corpus
    fp32 = NoteEmbedder(model, device="cpu", precision="fp32").embed(notes, image_root=root, batch_size=3)
    auto = NoteEmbedder(model, device="cpu").embed(notes, image_root=root, batch_size=3)
    np.testing.assert_array_equal(auto, fp32)  # auto is fp32 on CPU
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": False})
    emb = NoteEmbedder(model, device="cpu", precision="bf16")
    bf16 = emb.embed(notes, image_root=root, batch_size=3)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    cosine = (bf16 * fp32).sum(1)
    assert cosine.min() > 0.99  # bf16 keeps 8 bits of mantissa: row for row the same direction
    assert np.abs(bf16 - fp32).max() > 1e-4  # and it did run in bf16
    assert emb.model_id == NoteEmbedder(model, device="cpu").model_id  # the same model's vectors


def test_precision_is_checked_up_front(model, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=r"unknown precision 'half'.*auto, bf16, fp32"):
        NoteEmbedder(model, device="cpu", precision="half")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": False, "amx_bf16": False})
    with pytest.raises(UserError, match=r"emulated.*--precision fp32"):
        NoteEmbedder(model, device="cpu", precision="bf16")


def test_device_is_checked_up_front(model, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=r"unknown device 'gpu'; expected cpu, cuda or cuda:N"):
        NoteEmbedder(model, device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CI never has one; a GPU box may
    with pytest.raises(UserError, match=r"--device cuda:1 was asked for but no CUDA GPU is visible"):
        NoteEmbedder(model, device="cuda:1")
    assert NoteEmbedder(model).device == torch.device("cpu")  # unset: the CPU when there is no GPU
    assert NoteEmbedder(model, device="cpu:0").device.type == "cpu"
