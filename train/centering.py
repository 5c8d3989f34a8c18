"""Centering (`ModelConfig.center_llm`, `center_image`): measure the means once, before
the first step.

A decoder's last-token states are nearly parallel across inputs: for SmolLM2-135M on the
synth notes the mean cosine between two notes' `h` is 0.996, and in a trained notellm2
its shared part has 16x the norm of the part that varies. Fed as is, every note embeds
to about the same point (cosines 0.9 and up between unrelated notes), the contrastive
logits barely differ, and late fusion's gate, which multiplies `h` per dimension, turns
image-driven changes of `z` into large moves of that shared vector. The frozen image
encoder's pooled feature is all positive, so late fusion's `v = W_v cls` shares a large
part across notes too. Subtracting the means leaves the parts that tell notes apart.

The means are fixed buffers, measured here with the model as built (no gradient) and
saved with its checkpoint, so a trained model embeds the same way at serving time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from core.contracts import Note
from train.data import ImageLoader, NoteCollate, NoteDataset
from train.distributed import DistEnv, all_reduce_sum
from train.model import NoteLLM2

CENTER_NOTES = 128  # notes whose states give the means (all ranks together)


class _Mean:
    """Running sum of rows and of their unit vectors (for the mean cosine), float64."""

    def __init__(self, width: int) -> None:
        self.sum = torch.zeros(width, dtype=torch.float64)
        self.unit_sum = torch.zeros(width, dtype=torch.float64)
        self.n = 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().double().cpu()
        self.sum += x.sum(0)
        self.unit_sum += F.normalize(x, dim=-1).sum(0)
        self.n += x.shape[0]

    def reduce(self, env: DistEnv) -> None:
        flat = all_reduce_sum([*self.sum.tolist(), *self.unit_sum.tolist(), self.n], env)
        w = len(self.sum)
        self.sum = torch.tensor(flat[:w], dtype=torch.float64)
        self.unit_sum = torch.tensor(flat[w : 2 * w], dtype=torch.float64)
        self.n = flat[-1]

    def mean(self) -> torch.Tensor:
        return self.sum / self.n

    def mean_cosine(self) -> float:
        """Mean cosine between distinct rows: (|sum of unit vectors|^2 - n) / (n (n - 1))."""
        n = self.n
        return (float(self.unit_sum @ self.unit_sum) - n) / (n * (n - 1)) if n > 1 else 1.0


@torch.no_grad()
def measure_means(
    model: NoteLLM2,
    notes: Sequence[Note],
    images: ImageLoader,
    env: DistEnv,
    autocast: contextlib.AbstractContextManager,
    batch_size: int = 16,
) -> dict[str, float]:
    """Set the model's centering buffers to the means over `notes` (each rank embeds its
    own share): `llm_mean` and, with mICL, `llm_visual_mean` (`center_llm`), `image_mean`
    (`center_image`, late fusion only). Returns a summary for the log: the notes used and,
    per centred quantity, its mean's norm and the mean cosine between notes before
    centering."""
    cfg = model.config
    center_image = cfg.center_image and model.fusion is not None
    if not (cfg.center_llm or center_image):
        raise ValueError(
            "measure_means needs a model built with center_llm or center_image (with late fusion)"
        )
    if not notes:
        raise ValueError("measure_means needs at least one note")
    h_mean, hv_mean = _Mean(model.hidden_size), _Mean(model.hidden_size)
    cls_mean = _Mean(model.vision.width) if center_image else None
    loader = DataLoader(
        NoteDataset(list(notes[env.rank :: env.world_size]), images),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=NoteCollate(model.collator),
    )
    was_training = model.training
    model.eval()
    try:
        for batch, _counts in loader:
            with autocast:
                h, hv, cls = model.llm_states({k: v.to(model.device) for k, v in batch.items()})
            h_mean.add(h)
            if hv is not None:
                hv_mean.add(hv)
            if cls_mean is not None:
                cls_mean.add(cls)
    finally:
        model.train(was_training)
    summary: dict[str, float] = {}
    if cfg.center_llm:
        h_mean.reduce(env)
        model.llm_mean.copy_(h_mean.mean().to(model.llm_mean))
        summary.update(
            notes=h_mean.n, llm_mean_norm=float(h_mean.mean().norm()), llm_cosine=h_mean.mean_cosine()
        )
        if cfg.uses_micl:
            hv_mean.reduce(env)
            model.llm_visual_mean.copy_(hv_mean.mean().to(model.llm_visual_mean))
    if cls_mean is not None:
        cls_mean.reduce(env)
        model.image_mean.copy_(cls_mean.mean().to(model.image_mean))
        summary.update(
            notes=cls_mean.n,
            image_mean_norm=float(cls_mean.mean().norm()),
            image_cosine=cls_mean.mean_cosine(),
        )
    return summary


def describe(summary: dict[str, float]) -> str:
    """One log line for `measure_means`'s summary."""
    parts = []
    if "llm_mean_norm" in summary:
        parts.append(f"LLM state (norm {summary['llm_mean_norm']:.1f}, cosine {summary['llm_cosine']:.3f})")
    if "image_mean_norm" in summary:
        parts.append(
            f"image CLS (norm {summary['image_mean_norm']:.1f}, cosine {summary['image_cosine']:.3f})"
        )
    return (
        f"centering: means measured on {summary['notes']:.0f} train notes: "
        + "; ".join(parts)
        + " (cosine: the mean between two notes before centering)"
    )
