"""Choose the weight of late fusion's image share on the val split, after training.

Late fusion sums two shares of the embedding, `fused = llm share + g * image share`
(`train.fusion`; the paper's equation has g = 1 and leaves the balance to the gate z).
On a short budget the gate barely moves (with LoRA it ends 60 steps near its initial
0.5), and at initialisation the image share varies from note to note about a sixth as
much as the LLM share after the head. So the trained sum ranks almost as the LLM alone,
whatever the image share has learned (`train.fusion_pretrain` teaches it what the pairs
say about the image). A louder image share in *training* is no cure: the image then
explains the train pairs that the LLM should learn the words from, and the text side is
lost (benchmarks/QUALITY.md).

So the weight is set after training, the way a late-fusion weight is usually chosen:
on held-out pairs. The head is linear, so the multimodal embedding for any g is
`normalize(head(llm share) + g * head(image share))`: the val split's notes are embedded
once (both shares), every g of `GAINS` is scored, and the best by the run's
`best_metric` wins; a tie keeps the g nearest to the current one (1, the equation,
unless set before). The chosen g goes into the model's config, so the checkpoint saved
next carries it, and `i2i index`, `eval` and `serve` use it.

The score counts *every* val pair (`ValSet.all_pairs`): each pair's target is ranked
among all the other val notes (`core.metrics.all_pair_ranks`). The protocol's greedy
pairs, one per note, are 143-169 queries on the emoji benchmark's val split against
2,100-2,850 pairs, and a curve over 13 weights read from 150 queries picks its peak
from noise: over five draws the greedy curve chose g = 6, 4, 6, 2 and 0.5, all pairs
chose 2, 3, 3, 4 and 4 (benchmarks/QUALITY.md, "Choosing the image weight on every val
pair"). Validation and the best/ checkpoint keep the protocol; only this choice of a
setting uses the denser sample.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core import metrics
from core.contracts import Note
from train.data import ImageLoader
from train.distributed import DistEnv
from train.model import NoteLLM2
from train.validation import ValSet, embed_notes

# The weights tried (0 drops the image share, 1 is the paper's equation).
GAINS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


@dataclass(frozen=True)
class FusionCalibration:
    """What the calibration measured and chose."""

    gain: float  # the chosen g
    previous: float  # g before
    metric: str  # what chose it (the run's best_metric, or mrr)
    scores: dict[float, float]  # metric at every g tried (GAINS and the previous g)
    pairs: int  # val pairs scored

    def to_dict(self) -> dict[str, float | str]:
        return {
            "gain": self.gain,
            "previous_gain": self.previous,
            "metric": self.metric,
            "pairs": self.pairs,
            **{f"{self.metric}@g={g:g}": round(v, 6) for g, v in self.scores.items()},
        }


def calibration_metric(best_metric: str | None, ks: tuple[int, ...], pool: int) -> str:
    """The metric that chooses g: the run's `best_metric` when it ranks (val_loss does not
    depend on g in a way that ranks the pool), else MRR; a recall@K the pool (the val
    notes a pair's target competes with) is too small for falls back to MRR, as best/
    selection does."""
    if best_metric is None or best_metric == "val_loss":
        return "mrr"
    if best_metric.startswith("recall@") and int(best_metric.split("@")[1]) >= pool:
        return "mrr"
    return best_metric


@torch.no_grad()
def fusion_shares(
    model: NoteLLM2,
    notes: Sequence[Note],
    images: ImageLoader,
    env: DistEnv,
    *,
    batch_size: int,
    num_workers: int,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(LLM share, image share) of late fusion after the head for `notes`, (N, dim) each, at
    g = 1, so the embedding at any g is `normalize(llm + g * image)`. The model's g and
    train/eval mode are left as they were. Every rank returns all rows, like `validate`."""
    if model.fusion is None:
        raise ValueError(f"variant {model.config.variant!r} has no late fusion")
    context = autocast if autocast is not None else contextlib.nullcontext()

    def parts(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with context:
            return model.fusion_parts(batch)  # (B, dim) each

    was_training, gain = model.training, model.fusion.image_gain
    model.eval()
    model.fusion.image_gain = 1.0
    try:
        # `embed_notes` carries (multimodal, visual) pairs: here (LLM share, image share).
        llm_part, image_part = embed_notes(notes, parts, images, model.collator, env, batch_size, num_workers)
    finally:
        model.fusion.image_gain = gain
        model.train(was_training)
    assert image_part is not None
    return llm_part, image_part


@torch.no_grad()
def calibrate_image_gain(
    model: NoteLLM2,
    val: ValSet,
    images: ImageLoader,
    env: DistEnv,
    *,
    metric: str,
    ks: tuple[int, ...],
    batch_size: int,
    num_workers: int,
    autocast: contextlib.AbstractContextManager | None = None,
) -> FusionCalibration:
    """Rank `val` at every g of GAINS (and the current g), set the best on `model` (see the module docstring).
    Every rank embeds its shard and computes the same numbers, like `validate`."""
    if model.fusion is None:
        raise ValueError(f"variant {model.config.variant!r} has no late fusion to calibrate")
    previous = float(model.config.fusion_image_gain)
    llm_part, image_part = fusion_shares(
        model, val.notes, images, env, batch_size=batch_size, num_workers=num_workers, autocast=autocast
    )
    gains = sorted({*GAINS, previous})  # the current g is always a candidate
    scores = {g: _score(llm_part, image_part, g, val.all_pairs, metric, ks) for g in gains}
    by_closeness = sorted(gains, key=lambda g: abs(_log(g) - _log(previous)))
    best = max(by_closeness, key=lambda g: scores[g])  # max keeps the first of equals
    model.set_fusion_image_gain(best)
    return FusionCalibration(
        gain=best, previous=previous, metric=metric, scores=scores, pairs=len(val.all_pairs)
    )


def _log(g: float) -> float:
    return math.log(g) if g > 0 else -10.0


def _score(
    llm_part: torch.Tensor,
    image_part: torch.Tensor,
    g: float,
    pairs: np.ndarray,
    metric: str,
    ks: tuple[int, ...],
) -> float:
    """`metric` over every val pair, ranked by normalize(llm share + g * image share)."""
    emb = torch.nn.functional.normalize(llm_part + g * image_part, dim=-1).cpu().numpy()
    ranks = metrics.all_pair_ranks(emb, pairs[:, 0], pairs[:, 1], device=torch.device("cpu"))
    return float(metrics.rank_metrics(ranks, pool_size=len(emb) - 1, ks=ks)[metric])
