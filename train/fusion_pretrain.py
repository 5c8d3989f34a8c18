"""Pre-align the late fusion's image projection on the pairs, before the joint training.

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

Then it sets how loud the image share is. At PyTorch's default init `v` is quiet: after
the head, the image share `(1 - z) * v` of SmolLM2's fused embedding varies from note to
note about a sixth as much as the LLM share, so a sum of the two ranks almost as the LLM
alone, whatever `v` has learned. The stage scales `W_v` so that the two shares vary
equally (the mean distance of each note's share from the shares' mean, after the head,
over `BALANCE_NOTES` train notes with the untrained LLM): each modality starts with an
equal say, and the gate, trained from there, moves it. A louder *random* `v` only adds
noise and pulled the text side down (`fusion_init_gain`, `benchmarks/QUALITY.md`); a
pre-aligned one carries what the pairs say about the image.

Deterministic for a seed and the same on every DDP rank (each rank computes the same
steps on the same features), so no communication is needed.
"""

from __future__ import annotations

import math
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

BALANCE_NOTES = 64  # train notes whose fused shares set the image's loudness


@dataclass(frozen=True)
class FusionPretrainResult:
    """What the stage did, for the run's log and summary."""

    steps: int
    pairs_per_step: int
    notes: int
    loss_first: float  # mean loss of the first 10% of steps
    loss_last: float  # mean loss of the last 10% of steps
    v_norm_init: float  # mean ||v|| over the train notes at initialisation
    v_scale: float  # the factor W_v was scaled by after training, to balance the two shares
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
    balance_rows = rows[torch.randperm(len(rows), generator=generator)[:BALANCE_NOTES].numpy()]
    v_scale = balance_image_share(model, [split.notes[int(r)] for r in balance_rows], images)
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


def share_spread(x: torch.Tensor) -> torch.Tensor:
    """How much rows of `x` (B, d) vary: the mean distance from their mean."""
    return (x - x.mean(0)).norm(dim=1).mean()


def balance_image_share(model: NoteLLM2, notes: list[Note], images: ImageLoader, batch: int = 16) -> float:
    """Scale `W_v` so that, after the head, the image share of the multimodal embedding
    varies from note to note as much as the LLM share (`share_spread`), on `notes`, with
    the model as it is (untrained LLM); returns the factor (found by bisection: the gate
    reads `v` too). Eval mode, no gradients; the mode is restored."""
    assert model.fusion is not None
    was_training = model.training
    model.eval()
    states, feats = [], []
    with torch.no_grad():
        for start in range(0, len(notes), batch):
            chunk = notes[start : start + batch]
            # Cached features (1 + T, width) or pixels (3, H, W); never None for an image variant.
            loaded = cast(list[torch.Tensor], [images(n)[0] for n in chunk])
            h, _, cls = model.pooled_states(model.collate(chunk, torch.stack(loaded)))
            assert cls is not None
            states.append(h.float())
            feats.append(cls.float())
        h, cls = torch.cat(states), torch.cat(feats)
        v = model.fusion.project(cls.to(h.dtype))
        head = model.head if model.head is not None else torch.nn.Identity()

        def louder(scale: float) -> bool:  # the image share varies more than the LLM share
            llm_share, image_share, _ = model.fusion.shares(h, v * scale)
            return bool(share_spread(head(image_share)) > share_spread(head(llm_share)))

        # The gate reads v, so the ratio is not linear in the scale: bisect on log(scale).
        low, high = -12.0, 12.0  # e^-12 .. e^12
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (low, mid) if louder(math.exp(mid)) else (mid, high)
        scale = math.exp((low + high) / 2)
        model.fusion.vision_proj.weight.mul_(scale)
    model.train(was_training)
    return scale
