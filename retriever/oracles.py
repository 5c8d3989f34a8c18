"""Reference embedders that learn nothing: what a signal can reach, not a method.

They answer "how much of the test set could any model reach from this signal?":

- `LabelEmbedder`: one-hot of a ground-truth label per note (a generator's `topic` or
  `motif`, in `truth.parquet`). Two notes score 1 when they share the label and 0
  otherwise, so its Recall@K is the ceiling of that relation: a perfect model of the
  label and nothing else.
- `ColourHistogramEmbedder`: the image's colours, counted in `levels`^3 RGB bins over
  the pixels that are not near-white background, L2-normalised. It sees what a frozen
  ImageNet encoder is trained to ignore (ImageNet training jitters colour), so beside
  the encoder's own features it shows whether the image signal is lost at the encoder.

Both follow `core.contracts.Embedder`. Their scores tie often (one-hot dot products are
0 or 1 exactly); the harness counts ties by their expectation under random tie-breaking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.contracts import Note
from core.images import given_image, note_image


class LabelEmbedder:
    """One-hot of `labels[note_id]`; a note without a label gets the zero vector (it
    matches nothing)."""

    def __init__(self, labels: Mapping[str, object], model_id: str) -> None:
        values = sorted({str(v) for v in labels.values()})
        self.column = {v: i for i, v in enumerate(values)}
        self.labels = {str(k): str(v) for k, v in labels.items()}
        self.model_id = model_id
        self.dim = len(values)

    def embed(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        *,
        images: Sequence[Image.Image | None] | None = None,
        image_status: list[str] | None = None,
    ) -> np.ndarray:
        out = np.zeros((len(notes), self.dim), np.float32)
        for row, note in enumerate(notes):
            label = self.labels.get(str(note["note_id"]))
            if label is not None:
                out[row, self.column[label]] = 1.0
        return out


def colour_histogram(image: Image.Image, levels: int = 4, background: int = 235) -> np.ndarray:
    """(levels**3,) share of the non-background pixels in each RGB bin, L2-normalised.

    A pixel is background when all three channels are >= `background` (near white); an
    image that is all background is counted whole, so it still has a histogram.
    """
    if not 2 <= levels <= 16:
        raise ValueError(f"levels must be in 2..16, got {levels}")
    px = np.asarray(image.convert("RGB"), dtype=np.int64).reshape(-1, 3)
    fg = px[(px < background).any(axis=1)]
    if len(fg) == 0:
        fg = px
    bins = fg * levels // 256  # (n, 3) in 0..levels-1
    key = (bins[:, 0] * levels + bins[:, 1]) * levels + bins[:, 2]
    hist = np.bincount(key, minlength=levels**3).astype(np.float32)
    return hist / np.linalg.norm(hist)


class ColourHistogramEmbedder:
    """`colour_histogram` of each note's image (a missing or broken image: the blank one)."""

    def __init__(self, levels: int = 4, background: int = 235) -> None:
        self.levels = levels
        self.background = background
        self.model_id = f"colour-histogram-{levels}"
        self.dim = levels**3

    def embed(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        *,
        images: Sequence[Image.Image | None] | None = None,
        image_status: list[str] | None = None,
    ) -> np.ndarray:
        out = np.zeros((len(notes), self.dim), np.float32)
        for row, note in enumerate(notes):
            image, status = given_image(images[row]) if images is not None else note_image(note, image_root)
            if image_status is not None:
                image_status.append(status)
            out[row] = colour_histogram(image, self.levels, self.background)
        return out
