"""From a `--checkpoint` argument to an `Embedder`.

A training run directory holds `best/` and `last/` checkpoints; a checkpoint directory
holds the model's JSON config and weights. `--checkpoint` accepts either: a run
directory resolves to `best/`, else `last/`.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from i2i.contracts import Embedder
from i2i.errors import UserError

RUN_CHOICES = ("best", "last")


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory `path` names: itself, or a run's `best/` (else `last/`)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"checkpoint not found: {path} (expected a run directory with best/ or last/, "
            "or a checkpoint directory written by `i2i train`)"
        )
    for sub in RUN_CHOICES:
        if (path / sub).is_dir():
            return path / sub
    if not any(path.glob("*.json")):
        raise UserError(
            f"{path} is neither a run directory (no best/ or last/) nor a checkpoint (no JSON config); "
            "pass the directory `i2i train` wrote"
        )
    return path


def load_embedder(checkpoint: str | Path, device: str | None = None, **options: object) -> Embedder:
    """A `train.embed.NoteEmbedder` for the checkpoint (no grad; bf16 on GPU, fp32 on CPU).

    `options` (e.g. `blank_image=True`) pass through to NoteEmbedder where it accepts them.
    """
    ckpt = resolve_checkpoint(checkpoint)
    try:
        from train.embed import NoteEmbedder
    except ImportError as exc:  # the model package is part of this repository
        raise UserError(f"cannot load the model code (train.embed): {exc}") from None
    accepted = inspect.signature(NoteEmbedder).parameters
    kwargs = {k: v for k, v in {"device": device, **options}.items() if k in accepted and v is not None}
    return NoteEmbedder(ckpt, **kwargs)
