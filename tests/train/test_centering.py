"""Centering (`center_llm`, `center_image`): the measured means, the forward pass that
subtracts them, their round trip through a checkpoint, and the training loop that
measures them once."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from train.centering import measure_means
from train.checkpoint import load_checkpoint, save_checkpoint
from train.data import ImageStatus
from train.distributed import DistEnv
from train.loop import train
from train.model import build_model
from train.testing import tiny_model_config, tiny_notes, tiny_pixels

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

ONE_RANK = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)


def _images(notes: list, pixels: torch.Tensor):
    row = {n["note_id"]: i for i, n in enumerate(notes)}
    return lambda note: (pixels[row[note["note_id"]]], ImageStatus.LOADED)


def _measured(variant: str, n: int = 6, center_image: bool = False):
    torch.manual_seed(0)
    model = build_model(tiny_model_config(variant=variant, center_llm=True, center_image=center_image)).eval()
    notes, pixels = tiny_notes(n), tiny_pixels(n)
    summary = measure_means(model, notes, _images(notes, pixels), ONE_RANK, contextlib.nullcontext(), 4)
    return model, notes, pixels, summary


@pytest.mark.parametrize("variant", ["text-only", "notellm2"])
def test_means_are_the_mean_llm_states_and_forward_subtracts_them(variant: str) -> None:
    model, notes, pixels, summary = _measured(variant)
    batch = model.collate(notes, pixels if variant != "text-only" else None)
    with torch.no_grad():
        h, hv, cls = model.llm_states(batch)
        out = model(batch)
    assert summary["notes"] == len(notes)
    torch.testing.assert_close(model.llm_mean, h.mean(0), atol=1e-5, rtol=1e-4)
    assert summary["llm_mean_norm"] == pytest.approx(float(h.mean(0).norm()), rel=1e-4)
    unit = torch.nn.functional.normalize(h.double(), dim=-1)
    cos = unit @ unit.T
    off_diagonal = (cos.sum() - cos.trace()) / (len(notes) * (len(notes) - 1))
    assert summary["llm_cosine"] == pytest.approx(float(off_diagonal), abs=1e-6)
    # The embedding is built from h minus its mean (and, with mICL, hv minus its own mean).
    centred, centred_v = h - model.llm_mean, None if hv is None else hv - model.llm_visual_mean
    if model.fusion is not None:
        v = model.fusion.project(cls)
        centred, _ = model.fusion(centred, v)
        centred_v, _ = model.fusion(centred_v, v)
        torch.testing.assert_close(model.llm_visual_mean, hv.mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.multimodal, model._finish(centred), atol=1e-5, rtol=1e-4)
    if centred_v is not None:
        torch.testing.assert_close(out.visual, model._finish(centred_v), atol=1e-5, rtol=1e-4)
    assert float(model.llm_mean.norm()) > 0


def test_without_center_llm_there_are_no_means_and_measuring_refuses() -> None:
    model = build_model(tiny_model_config(variant="basic"))
    assert not hasattr(model, "llm_mean")
    with pytest.raises(ValueError, match="center_llm or center_image"):
        no_image = lambda note: (None, ImageStatus.NO_IMAGE)  # noqa: E731
        measure_means(model, tiny_notes(2), no_image, ONE_RANK, contextlib.nullcontext())


def test_image_mean_is_the_mean_cls_and_late_fusion_projects_cls_minus_it() -> None:
    model, notes, pixels, summary = _measured("late-fusion", center_image=True)
    batch = model.collate(notes, pixels)
    with torch.no_grad():
        h, _, cls = model.llm_states(batch)
        out = model(batch)
        fused, _ = model.fusion(h - model.llm_mean, model.fusion.project(cls - cls.mean(0)))
    torch.testing.assert_close(model.image_mean, cls.mean(0), atol=1e-5, rtol=1e-4)
    assert summary["image_mean_norm"] == pytest.approx(float(cls.mean(0).norm()), rel=1e-4)
    torch.testing.assert_close(out.multimodal, model._finish(fused), atol=1e-5, rtol=1e-4)
    # Without late fusion the CLS feature reaches no embedding: nothing to centre.
    assert not hasattr(build_model(tiny_model_config(variant="basic", center_image=True)), "image_mean")


def test_means_survive_a_checkpoint_round_trip(tmp_path: Path) -> None:
    model, notes, pixels, _ = _measured("notellm2", center_image=True)
    save_checkpoint(model, tmp_path / "ckpt")
    back = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(back.llm_mean, model.llm_mean)
    assert torch.equal(back.llm_visual_mean, model.llm_visual_mean)
    assert torch.equal(back.image_mean, model.image_mean)
    with torch.no_grad():
        a, b = model(model.collate(notes, pixels)), back(back.collate(notes, pixels))
    assert torch.equal(a.multimodal, b.multimodal)


def test_training_measures_the_means_once_and_resume_keeps_them(make_config, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = make_config(variant="notellm2", out=str(out), max_steps=2, val_every=2, model={"center_llm": True})
    text = io.StringIO()
    train(cfg, console=Console(file=text, width=200))
    assert "centering: means measured on" in text.getvalue()
    first = load_checkpoint(out / "last")
    assert float(first.llm_mean.norm()) > 0 and float(first.llm_visual_mean.norm()) > 0
    assert json.loads((out / "config.json").read_text())["model"]["center_llm"] is True

    more = make_config(variant="notellm2", out=str(out), max_steps=4, val_every=2, model={"center_llm": True})
    text = io.StringIO()
    train(more, console=Console(file=text, width=200), resume=True)
    assert "centering" not in text.getvalue()  # measured once, at the start of the run
    assert torch.equal(load_checkpoint(out / "last").llm_mean, first.llm_mean)
