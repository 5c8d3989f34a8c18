"""`NoteCollator`: notes (+ pixels) -> the tensors `NoteLLM2.forward` reads.

Picklable (a tokenizer and a config), so DataLoader workers can run it. Output:

    input_ids      (batch, seq)  long, padded on the tokenizer's side
    attention_mask (batch, seq)  long, 1 = real token
    pixel_values   (batch, 3, H, W) float, only for image variants, or instead
    vision_features (batch, 1 + T, width) float: the frozen encoder's [cls; tokens] per
                   note, precomputed by `train.vision_cache.VisionFeatureCache`

For training, pass the 2N notes of a batch of N pairs as `[q_1..q_N, d_1..d_N]` (see
`train.loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from core.contracts import Note
from train.model_config import ModelConfig
from train.prompts import render_prompt


class NoteCollator:
    def __init__(self, tokenizer: Any, config: ModelConfig, blank_text: bool = False) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.blank_text = blank_text  # render every note with empty title, tags and content

    def prompts(self, notes: Sequence[Note]) -> list[str]:
        return [render_prompt(n, self.config, self.tokenizer, blank_text=self.blank_text) for n in notes]

    def __call__(
        self, notes: Sequence[Note], pixel_values: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if not notes:
            raise ValueError("cannot collate an empty list of notes")
        enc = self.tokenizer(self.prompts(notes), padding=True, return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"].long()}
        if self.config.uses_images:
            if pixel_values is None:
                raise ValueError(
                    f"variant {self.config.variant!r} reads images: pass pixel_values "
                    "(model.vision.transform of each note's image, stacked)"
                )
            if pixel_values.shape[0] != len(notes):
                raise ValueError(f"{len(notes)} notes but {pixel_values.shape[0]} images in pixel_values")
            # rows of 3-D images are pixels; rows of 2-D (1 + T, width) are cached features
            key = "vision_features" if pixel_values.dim() == 3 else "pixel_values"
            batch[key] = pixel_values
        return batch
