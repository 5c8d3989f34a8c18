"""Pre-aligning the late fusion's image projection: it learns what the pairs say about the
image, keeps the image share's loudness, touches nothing else, and the loop runs it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from core.errors import UserError
from train.checkpoint import load_checkpoint
from train.fusion_pretrain import pretrain_fusion_projection
from train.loop import train
from train.model import build_model
from train.testing import clustered_image_split, tiny_model_config

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def image_path_recall(model, cls: torch.Tensor, group: np.ndarray) -> float:
    """Share of notes whose nearest other note (by normalize(head(W_v cls))) is in its group."""
    with torch.no_grad():
        emb = F.normalize(model.head(model.fusion.project(cls)), dim=-1)
    sim = emb @ emb.T
    sim.fill_diagonal_(-2)
    return float((group[sim.argmax(1).numpy()] == group).mean())


def test_pre_alignment_learns_the_image_signal_and_keeps_its_loudness() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config(variant="notellm2"))
    split, cache, group = clustered_image_split()
    cls = cache.features[:, 0]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    norm_before = model.fusion.project(cls).norm(dim=1).mean().item()
    recall_before = image_path_recall(model, cls, group)

    result = pretrain_fusion_projection(model, split, cache, steps=150, pairs_per_step=16, lr=1e-2, seed=0)

    assert result.loss_last < result.loss_first - 0.5, result
    assert image_path_recall(model, cls, group) > recall_before + 0.2
    # Same mean ||v|| over the notes as at initialisation (it was recorded, too).
    assert model.fusion.project(cls).norm(dim=1).mean().item() == pytest.approx(norm_before, rel=1e-4)
    assert result.v_norm_init == pytest.approx(norm_before, rel=1e-5) and result.v_scale > 0
    # Only W_v moved; the head stays trainable for the joint stage.
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"fusion.vision_proj.weight"}
    assert all(p.requires_grad for p in model.head.parameters())


def test_pre_alignment_is_deterministic_for_a_seed() -> None:
    weights = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)  # the same initial model every time
        model = build_model(tiny_model_config(variant="late-fusion"))
        split, cache, _ = clustered_image_split()
        pretrain_fusion_projection(model, split, cache, steps=5, pairs_per_step=8, lr=1e-2, seed=seed)
        weights.append(model.fusion.vision_proj.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


def test_a_variant_without_late_fusion_is_refused() -> None:
    model = build_model(tiny_model_config(variant="micl"))
    split, cache, _ = clustered_image_split()
    with pytest.raises(ValueError, match="no late fusion"):
        pretrain_fusion_projection(model, split, cache, steps=1, pairs_per_step=8, lr=1e-3, seed=0)


@pytest.mark.parametrize("cache_vision", [True, False])
def test_the_loop_pre_aligns_before_the_first_step(make_config, tmp_path, cache_vision) -> None:
    cfg = make_config(
        variant="notellm2",
        out=str(tmp_path / "run"),
        max_steps=2,
        val_every=2,
        fusion_pretrain_steps=5,
        fusion_pretrain_pairs=8,
        cache_vision=cache_vision,
    )
    console = Console(file=io.StringIO(), width=160)
    train(cfg, console=console)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert lines[0]["split"] == "fusion_pretrain" and lines[0]["step"] == 0
    assert lines[0]["steps"] == 5 and lines[0]["pairs_per_step"] == 8 and lines[0]["v_scale"] > 0
    assert "late fusion pre-aligned: 5 steps x 8 pairs" in console.file.getvalue()


def test_aligning_at_the_end_leaves_the_joint_stage_as_the_paper_runs_it(make_config, tmp_path) -> None:
    """`fusion_pretrain_at = "end"`: the joint stage is the one-stage run step for step (the
    same losses); W_v is aligned after the last step, before the calibration, and the
    checkpoint carries the aligned W_v."""
    runs = {}
    for name, steps in (("paper", 0), ("end", 5)):
        cfg = make_config(
            variant="notellm2",
            out=str(tmp_path / name),
            max_steps=2,
            val_every=2,
            fusion_pretrain_steps=steps,
            fusion_pretrain_pairs=8,
            fusion_pretrain_at="end",
            fusion_calibrate=True,
            seed=3,
        )
        console = Console(file=io.StringIO(), width=160)
        train(cfg, console=console)
        runs[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
    losses = {name: [r["loss"] for r in lines if r["split"] == "train"] for name, lines in runs.items()}
    assert losses["end"] == pytest.approx(losses["paper"], rel=1e-5)
    order = [(r["split"], r["step"]) for r in runs["end"] if r["split"] != "train" and r["step"] > 0]
    assert order == [("fusion_pretrain", 2), ("fusion_calibration", 2), ("val", 2)]
    assert "late fusion aligned after step 2: 5 steps x 8 pairs" in console.file.getvalue()
    weights = {
        name: load_checkpoint(tmp_path / name / "last", device="cpu").fusion.vision_proj.weight
        for name in runs
    }
    assert not torch.allclose(weights["end"], weights["paper"])


def test_the_loop_skips_pre_alignment_without_late_fusion(make_config, tmp_path) -> None:
    cfg = make_config(variant="micl", out=str(tmp_path / "run"), max_steps=1, fusion_pretrain_steps=5)
    train(cfg, console=Console(file=io.StringIO()))
    splits = {json.loads(line)["split"] for line in (tmp_path / "run" / "metrics.jsonl").open()}
    assert "fusion_pretrain" not in splits


@pytest.mark.parametrize(
    ("field", "value"),
    [("fusion_pretrain_steps", -1), ("fusion_pretrain_pairs", 1), ("fusion_pretrain_at", "middle")],
)
def test_bad_settings_are_user_errors(make_config, field, value) -> None:
    with pytest.raises(UserError, match=field):
        make_config(**{field: value})
