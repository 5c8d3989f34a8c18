"""Calibrating the image share's weight on the val split: the shares add up to the served
embedding, the best weight is chosen and kept by the checkpoint, and the loop runs it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from core.errors import UserError
from train.checkpoint import load_checkpoint, load_extra
from train.distributed import DistEnv
from train.fusion_calibration import GAINS, calibrate_image_gain, calibration_metric
from train.loop import train
from train.model import build_model
from train.model_config import ModelConfig
from train.run_data import load_splits
from train.testing import clustered_image_split, tiny_model_config
from train.validation import build_val_set

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

CPU = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), owns_group=False)


def batch_of(model, cache, notes):
    return model.collate(notes, torch.stack([cache(n)[0] for n in notes]))


@pytest.mark.parametrize("residual", [False, True])
def test_the_shares_sum_to_the_served_embedding_at_any_gain(residual: bool) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_config(variant="notellm2", fusion_residual=residual)).eval()
    split, cache, _ = clustered_image_split()
    batch = batch_of(model, cache, split.notes[:6])
    with torch.no_grad():
        llm_part, image_part = model.fusion_parts(batch)
        for gain in (0.0, 1.0, 3.5):
            model.set_fusion_image_gain(gain)
            served = model(batch).multimodal
            assert torch.allclose(served, F.normalize(llm_part + gain * image_part, dim=-1), atol=1e-5)


def test_setting_the_gain_leaves_the_callers_config_alone() -> None:
    config = tiny_model_config(variant="late-fusion")
    model = build_model(config)
    model.set_fusion_image_gain(2.0)
    assert model.config.fusion_image_gain == 2.0 and config.fusion_image_gain == 1.0
    with pytest.raises(UserError, match="fusion_image_gain must be a number >= 0"):
        model.set_fusion_image_gain(-1.0)
    with pytest.raises(ValueError, match="no late fusion"):
        build_model(tiny_model_config(variant="micl")).set_fusion_image_gain(2.0)


def test_calibration_picks_the_gain_that_ranks_val_best() -> None:
    """The tiny LLM reads empty text and knows nothing; the image says who is related.
    The calibration must turn the image share up, and the model then ranks val as scored."""
    torch.manual_seed(0)
    model = build_model(tiny_model_config(variant="notellm2", fusion_residual=True))
    split, cache, _ = clustered_image_split(groups=6, per_group=12, seed=1, signal=2.0)
    val = build_val_set(split)
    result = calibrate_image_gain(
        model, val, cache, CPU, metric="recall@10", ks=(10,), batch_size=16, num_workers=0
    )
    assert set(GAINS) <= set(result.scores)
    assert result.previous == 1.0 and result.gain == max(result.scores, key=result.scores.__getitem__)
    assert result.gain > 1.0 and result.scores[result.gain] > result.scores[1.0] + 0.02, result.scores
    assert model.config.fusion_image_gain == result.gain and model.fusion.image_gain == result.gain
    # The model as set ranks val with the score the calibration recorded for its gain.
    model.eval()
    with torch.no_grad():
        emb = model(batch_of(model, cache, val.notes)).multimodal
    from core import metrics

    pairs = val.all_pairs
    assert result.pairs == len(pairs) > len(val.query_rows)  # every val pair, not only the greedy ones
    ranks = metrics.all_pair_ranks(emb, pairs[:, 0], pairs[:, 1])
    assert metrics.rank_metrics(ranks, len(val.notes) - 1, ks=(10,))["recall@10"] == pytest.approx(
        result.scores[result.gain], abs=1e-6
    )


def test_a_tie_keeps_the_current_gain() -> None:
    """With a frozen encoder that sees nothing (every note's features equal), no gain ranks
    better than another: the calibration keeps the weight it found."""
    torch.manual_seed(0)
    model = build_model(tiny_model_config(variant="late-fusion"))
    split, cache, _ = clustered_image_split()
    cache.features[:] = cache.features[0]
    model.set_fusion_image_gain(0.0)  # the image share is off
    result = calibrate_image_gain(
        model, build_val_set(split), cache, CPU, metric="mrr", ks=(5,), batch_size=16, num_workers=0
    )
    assert len(set(np.round(list(result.scores.values()), 9))) == 1
    assert result.gain == 0.0 and result.previous == 0.0


@pytest.mark.parametrize(
    ("best", "pool", "expected"),
    [("recall@10", 231, "recall@10"), ("recall@10", 8, "mrr"), ("val_loss", 231, "mrr"), ("mrr", 9, "mrr")],
)
def test_the_calibration_metric(best: str, pool: int, expected: str) -> None:
    assert calibration_metric(best, (10,), pool) == expected


def test_the_loop_calibrates_before_the_final_checkpoint(make_config, tmp_path) -> None:
    cfg = make_config(
        variant="notellm2", out=str(tmp_path / "run"), max_steps=2, val_every=2, fusion_calibrate=True
    )
    console = Console(file=io.StringIO(), width=160)
    result = train(cfg, console=console)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    record = next(r for r in lines if r["split"] == "fusion_calibration")
    assert record["step"] == 2 and record["previous_gain"] == 1.0 and record["gain"] in GAINS
    assert record["pairs"] == len(build_val_set(load_splits(cfg)[1]).all_pairs) > 0
    assert (
        f"late fusion calibrated on val ({record['pairs']} pairs): image share weight 1 ->"
        in console.file.getvalue()
    )
    final_val = [r for r in lines if r["split"] == "val"][-1]
    assert final_val["step"] == 2
    # The checkpoint carries the chosen weight; the caller's config is left at 1.
    saved = ModelConfig.from_json(tmp_path / "run" / "last" / "config.json")
    assert saved.fusion_image_gain == record["gain"] and cfg.model.fusion_image_gain == 1.0
    assert load_checkpoint(tmp_path / "run" / "last").fusion.image_gain == record["gain"]
    assert result.metrics["mrr"] == pytest.approx(final_val["mrr"])


def test_the_loop_does_not_calibrate_unasked_or_without_late_fusion(make_config, tmp_path) -> None:
    for name, variant, calibrate in (("off", "notellm2", False), ("micl", "micl", True)):
        cfg = make_config(variant=variant, out=str(tmp_path / name), max_steps=1, fusion_calibrate=calibrate)
        train(cfg, console=Console(file=io.StringIO()))
        splits = {json.loads(line)["split"] for line in (tmp_path / name / "metrics.jsonl").open()}
        assert "fusion_calibration" not in splits


def only_the_first_validation_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every later validation loses to the first, as on a tie."""
    import train.loop as loop

    real = loop.is_better
    monkeypatch.setattr(
        loop, "is_better", lambda record, best, metric: best is None and real(record, best, metric)
    )


def test_the_finished_model_is_best_even_when_an_earlier_step_read_higher(
    make_config, tmp_path, monkeypatch
) -> None:
    """An earlier checkpoint never had the finishing steps: a val score it wins (here every
    later comparison is lost, as on a tie) must not keep it as best/."""
    only_the_first_validation_wins(monkeypatch)
    cfg = make_config(
        variant="notellm2", out=str(tmp_path / "run"), max_steps=3, val_every=1, fusion_calibrate=True
    )
    console = Console(file=io.StringIO(), width=200)
    result = train(cfg, console=console)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    gain = next(r for r in lines if r["split"] == "fusion_calibration")["gain"]
    best = tmp_path / "run" / "best"
    assert (
        load_extra(best)["step"] == 3
        and ModelConfig.from_json(best / "config.json").fusion_image_gain == gain
    )
    assert result.best_checkpoint == best and result.best == result.metrics
    assert (
        "best/ is the finished model of step 3: the checkpoint of step 1 read higher"
        in console.file.getvalue()
    )


def test_without_finishing_steps_an_earlier_best_stays(make_config, tmp_path, monkeypatch) -> None:
    only_the_first_validation_wins(monkeypatch)
    cfg = make_config(variant="notellm2", out=str(tmp_path / "run"), max_steps=3, val_every=1)
    train(cfg, console=Console(file=io.StringIO()))
    assert load_extra(tmp_path / "run" / "best")["step"] == 1
