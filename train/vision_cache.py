"""`VisionFeatureCache`: the frozen vision encoder's output for every note, computed once.

The vision encoder is frozen (eval mode, no dropout, never updated), so its output for a
note's image is the same at every step. Training without a cache decodes, resizes and
encodes both images of every pair at every step; with it, each note's image is encoded
once before the first step, and a step costs only the connector and the LLM.

The cache is a drop-in for `train.data.NoteImageLoader`: `cache(note)` returns
`(features, status)` where features is `(1 + T, width)` = `[cls; patch tokens]`, the
encoder's output for that note, instead of `(3, H, W)` pixels. `NoteCollator` stacks
such rows into `batch["vision_features"]` and `NoteLLM2.forward` then skips the encoder.
Same numbers as encoding on the fly (a test trains both ways and compares).

Memory: notes x (1 + T) x width floats; EfficientNet-Lite0 at 224 px is 50 x 1280, about
256 KB a note in float32 (940 MB for 3,658 notes). Over `max_bytes` the loop trains
without a cache rather than risk the machine's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch

from core.contracts import Note
from core.images import blank_image
from train.data import ImageStatus, NoteImageLoader
from train.vision import VisionEncoder

DEFAULT_MAX_BYTES = 4 * 2**30


class VisionFeatureCache:
    """note_id -> the frozen encoder's `[cls; tokens]` features, as an image loader."""

    def __init__(self, features: torch.Tensor, status: np.ndarray, rows: dict[str, int]) -> None:
        self.features = features  # (notes, 1 + T, width) float32, CPU
        self.status = status  # (notes,) ImageStatus per note
        self.rows = rows  # note_id -> row

    def __len__(self) -> int:
        return len(self.rows)

    def __call__(self, note: Note) -> tuple[torch.Tensor, ImageStatus]:
        row = self.rows.get(str(note["note_id"]))
        if row is None:
            raise KeyError(
                f"note {note['note_id']!r} is not in the vision cache (built for {len(self)} notes)"
            )
        return self.features[row], ImageStatus(int(self.status[row]))

    @staticmethod
    def bytes_needed(vision: VisionEncoder, notes: int, device: torch.device | str = "cpu") -> int:
        """Bytes the cache of `notes` notes will take (one probe forward)."""
        probe = vision.transform(blank_image())[None].to(device)  # (1, 3, H, W)
        with torch.no_grad():
            _, tokens = vision(probe.to(next(vision.parameters()).dtype))
        return notes * (1 + tokens.shape[1]) * tokens.shape[2] * 4

    @classmethod
    def build(
        cls,
        vision: VisionEncoder,
        notes: Sequence[Note],
        images: NoteImageLoader,
        device: torch.device | str = "cpu",
        batch_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> VisionFeatureCache:
        """Encode each distinct note's image once (`images` decodes it exactly as training
        would). `on_batch(n)` is called after every n notes encoded (progress)."""
        unique: dict[str, Note] = {}
        for note in notes:
            unique.setdefault(str(note["note_id"]), note)
        ordered = list(unique.values())
        rows = {nid: i for i, nid in enumerate(unique)}
        status = np.zeros(len(ordered), dtype=np.int8)
        parts: list[torch.Tensor] = []
        dtype = next(vision.parameters()).dtype
        was_training = vision.training
        vision.eval()
        with torch.no_grad():
            for start in range(0, len(ordered), batch_size):
                chunk = ordered[start : start + batch_size]
                loaded = [images(n) for n in chunk]
                # A loader with the encoder's transform always returns pixels.
                pixels = torch.stack(cast(list[torch.Tensor], [p for p, _ in loaded]))
                pixels = pixels.to(device=device, dtype=dtype)
                status[start : start + len(chunk)] = [int(s) for _, s in loaded]
                cls_, tokens = vision(pixels)  # (b, width), (b, T, width)
                parts.append(torch.cat([cls_[:, None], tokens], dim=1).float().cpu())  # (b, 1 + T, width)
                if on_batch is not None:
                    on_batch(len(chunk))
        vision.train(was_training)
        features = torch.cat(parts) if parts else torch.zeros(0, 1, 1)
        return cls(features, status, rows)
