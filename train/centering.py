"""Centering the LLM embeddings (`ModelConfig.center_llm`): measure their means once,
before the first step.

A decoder's last-token states are nearly parallel across inputs: for SmolLM2-135M on the
synth notes the mean cosine between two notes' `h` is 0.996, and its shared part has 16x
the norm of the part that varies. Fed as is, every note embeds to about the same point
(cosines 0.9 and up between unrelated notes), the contrastive logits barely differ, and
late fusion's gate, which multiplies `h` per dimension, turns image-driven changes of
`z` into large moves of that shared vector. Subtracting the mean leaves the part of `h`
that tells notes apart. The means are fixed buffers, measured here with the model as
built (no gradient) and saved with its checkpoint, so a trained model embeds the same
way at serving time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from core.contracts import Note
from train.data import ImageLoader, NoteCollate, NoteDataset
from train.distributed import DistEnv, all_reduce_sum
from train.model import NoteLLM2

CENTER_NOTES = 128  # notes whose LLM states give the means (all ranks together)


@torch.no_grad()
def measure_llm_means(
    model: NoteLLM2,
    notes: Sequence[Note],
    images: ImageLoader,
    env: DistEnv,
    autocast: contextlib.AbstractContextManager,
    batch_size: int = 16,
) -> dict[str, float]:
    """Set `model.llm_mean` (and `llm_visual_mean` with mICL) to the mean LLM state over
    `notes`, each rank embedding its own share; returns a summary for the log: the notes
    used, the mean's norm and the mean cosine between notes' uncentred `h`."""
    if not model.config.center_llm:
        raise ValueError("measure_llm_means needs a model built with center_llm=True")
    if not notes:
        raise ValueError("measure_llm_means needs at least one note")
    hidden = model.hidden_size
    sums = torch.zeros(3 * hidden + 2, dtype=torch.float64)  # [sum h, sum hv, sum unit(h), n, n_hv]
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
                h, hv, _cls = model.llm_states({k: v.to(model.device) for k, v in batch.items()})
            h = h.double().cpu()
            sums[:hidden] += h.sum(0)
            sums[2 * hidden : 3 * hidden] += torch.nn.functional.normalize(h, dim=-1).sum(0)
            sums[3 * hidden] += h.shape[0]
            if hv is not None:
                sums[hidden : 2 * hidden] += hv.double().cpu().sum(0)
                sums[3 * hidden + 1] += hv.shape[0]
    finally:
        model.train(was_training)
    sums = torch.tensor(all_reduce_sum(sums.tolist(), env), dtype=torch.float64)
    n, n_visual = float(sums[3 * hidden]), float(sums[3 * hidden + 1])
    mean = sums[:hidden] / n
    model.llm_mean.copy_(mean.to(model.llm_mean))
    if n_visual:
        model.llm_visual_mean.copy_((sums[hidden : 2 * hidden] / n_visual).to(model.llm_visual_mean))
    # mean cosine between distinct notes = (|sum of unit vectors|^2 - n) / (n (n - 1))
    unit_sum = sums[2 * hidden : 3 * hidden]
    mean_cos = (float(unit_sum @ unit_sum) - n) / (n * (n - 1)) if n > 1 else 1.0
    return {"notes": n, "mean_norm": float(mean.norm()), "mean_cosine": mean_cos}
