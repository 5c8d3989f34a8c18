"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

Written as a pure function of the optimizer step (nanoGPT style) instead of a
`torch.optim.lr_scheduler` object: the loop sets each param group's lr before every
step, so the schedule's whole state is the step counter the loop already checkpoints.
"""

from __future__ import annotations

import math


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warm-up length in steps: `warmup_ratio` of the run, at least 1 when the ratio is > 0."""
    if warmup_ratio <= 0:
        return 0
    return max(1, math.ceil(warmup_ratio * total_steps))


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate for optimizer step `step` (0-based, the step about to be taken).

    Warm-up: lr rises linearly from base_lr / warmup_steps to base_lr over `warmup_steps`
    steps (never exactly 0, so step 0 already moves the weights). Then cosine decay from
    base_lr to `min_lr_ratio * base_lr` at the last step.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    floor = min_lr_ratio * base_lr
    return floor + 0.5 * (base_lr - floor) * (1.0 + math.cos(math.pi * progress))
