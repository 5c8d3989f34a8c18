"""Align the late fusion's image projection on the pairs, before or after the joint training.

Late fusion adds `v = W_v · cls` (the frozen encoder's global feature, projected) to the
LLM's embedding. `W_v` starts random, so at first `v` is a random projection of `cls`:
it carries the raw feature's cosine geometry and nothing the co-views teach. In the
joint stage `W_v` learns at the new modules' rate from the same batches as the LLM, and
on a short budget (60 steps x 16 pairs) that is far too few pairs for it to learn what
in the image predicts a co-view (`benchmarks/QUALITY.md`, "Pre-aligning the image
projection": a linear map trained on the frozen features finds the colour pairs that
the raw feature misses, but only after a few hundred steps).

Those steps are nearly free. The encoder is frozen, so `cls` is computed once (the
vision cache), and the image path `normalize(head(W_v · cls))` skips the LLM. This
stage trains `W_v` alone on the pair contrastive loss of that path for
`fusion_pretrain_steps` steps of `fusion_pretrain_pairs` pairs (in-batch negatives,
the model's initial logit scale, Adam at the new modules' `lr`). The head, the gate, the
connector and the LLM are untouched. LLaVA's stage 1 aligns a connector in the same
spirit; here only the part that reads the frozen feature directly can be aligned
without the LLM.

Then it scales `W_v` back so that the mean norm of `v` over the train notes is what it
was before the stage (at initialisation when it runs first): the stage changes *what* the
image share says, not how loud it is.
A loud image share during training, random (`fusion_init_gain`) or pre-aligned (set to
vary as much as the LLM share), explains the train pairs that the LLM should learn the
words from, and the text side is lost (`benchmarks/QUALITY.md`). How much the image share
weighs in the served embedding is chosen after training, on the val split
(`train.fusion_calibration`).

When (`TrainConfig.fusion_pretrain_at`): "start" runs it before the first step. "end"
runs it after the last step, through the trained head, before the calibration: the joint
stage is then the paper's one stage, step for step, with W_v as initialised. An image
share that knows the pairs from the first step is a shortcut even at its initial
loudness: on the emoji benchmark the LLM share of such a run ranked the text pairs at
0.130 against text-only's 0.402 (`benchmarks/QUALITY.md`, "Aligning the image projection
after the joint stage").

Deterministic for a seed and the same on every DDP rank (each rank computes the same
steps on the same features), so no communication is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from core.contracts import Note
from train.data import ImageLoader, PairSplit
from train.loss import pair_contrastive_loss
from train.model import NoteLLM2


@dataclass(frozen=True)
class FusionPretrainResult:
    """What the stage did, for the run's log and summary."""

    steps: int
    pairs_per_step: int
    notes: int
    loss_first: float  # mean loss of the first 10% of steps
    loss_last: float  # mean loss of the last 10% of steps
    v_norm_init: float  # mean ||v|| over the train notes before the stage (at init when run first)
    v_scale: float  # the factor W_v was scaled by after training, back to v_norm_init
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def cls_features(rows: np.ndarray, notes: list[Note], images: ImageLoader, model: NoteLLM2) -> torch.Tensor:
    """The frozen encoder's CLS feature (len(rows), width) of `notes[rows]`: read from the
    vision cache when `images` is one, else encoded here once (batches of 64)."""
    from train.vision_cache import VisionFeatureCache

    if isinstance(images, VisionFeatureCache):
        return torch.stack([images(notes[int(r)])[0][0] for r in rows]).float()
    assert model.vision is not None  # only called for variants with late fusion
    dtype = next(model.vision.parameters()).dtype
    parts = []
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            # A loader with the encoder's transform always returns pixels (blank when broken).
            pixels = cast(list[torch.Tensor], [images(notes[int(r)])[0] for r in rows[start : start + 64]])
            batch = torch.stack(pixels).to(model.device, dtype)
            cls, _ = model.vision(batch)
            parts.append(cls.float().cpu())
    return torch.cat(parts)


def pretrain_fusion_projection(
    model: NoteLLM2,
    split: PairSplit,
    images: ImageLoader,
    *,
    steps: int,
    pairs_per_step: int,
    lr: float,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> FusionPretrainResult:
    """Train the late fusion's `W_v` alone on `split`'s pairs (see the module docstring).

    `images`: the run's vision cache (or image loader); `on_step(step, loss)` after every
    step (progress). Raises ValueError for a model without late fusion.
    """
    import time

    if model.fusion is None:
        raise ValueError(f"variant {model.config.variant!r} has no late fusion to pre-align")
    t0 = time.perf_counter()
    device = model.device
    rows = split.note_indices()  # (notes,) rows of split.notes
    cls = cls_features(rows, split.notes, images, model).to(device)  # (notes, width)
    where = {int(r): i for i, r in enumerate(rows)}
    query = torch.tensor([where[int(r)] for r in split.query], device=device)  # (pairs,)
    target = torch.tensor([where[int(r)] for r in split.target], device=device)  # (pairs,)
    proj = model.fusion.vision_proj  # W_v
    head = model.head
    logit_scale = model.logit_scale.detach()
    with torch.no_grad():
        norm_before = proj(cls).norm(dim=1).mean()

    frozen = [p for p in ([] if head is None else list(head.parameters())) if p.requires_grad]
    for p in frozen:  # the head is read, not trained: its gradient would only be discarded
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(proj.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = min(pairs_per_step, len(query))
    losses: list[float] = []
    try:
        for step in range(steps):
            pick = torch.randperm(len(query), generator=generator)[:n].to(device)  # (n,) distinct pairs
            both = torch.cat([cls[query[pick]], cls[target[pick]]])  # (2n, width)
            emb = proj(both)  # (2n, hidden)
            if head is not None:
                emb = head(emb)  # (2n, dim)
            emb = F.normalize(emb, dim=-1)
            loss = pair_contrastive_loss(emb[:n], emb[n:], logit_scale, gather=False)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1, losses[-1])
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():  # the same loudness as before the stage
        v_scale = float(norm_before / proj(cls).norm(dim=1).mean().clamp_min(1e-12))
        proj.weight.mul_(v_scale)
    tenth = max(1, steps // 10)
    return FusionPretrainResult(
        steps=steps,
        pairs_per_step=n,
        notes=len(rows),
        loss_first=float(np.mean(losses[:tenth])) if losses else float("nan"),
        loss_last=float(np.mean(losses[-tenth:])) if losses else float("nan"),
        v_norm_init=float(norm_before),
        v_scale=v_scale,
        seconds=time.perf_counter() - t0,
    )
