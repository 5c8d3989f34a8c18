"""`NoteEmbedder`: a checkpoint (or an in-memory model) as an `core.contracts.Embedder`.

The indexer and the evaluator call `embed(notes, image_root, batch_size)` and get
L2-normalised float32 vectors, one row per note, in input order. Inside: notes are
sorted by text length so each batch pads little, images are decoded with
`core.images.load_image` (never raising; failures counted) on a few threads, forward
runs under `torch.inference_mode` and the precision asked for (`auto`: bf16 autocast on
CUDA, fp32 on CPU; `bf16`: bf16 autocast on CUDA or on a CPU with native bf16; `fp32`),
and rows are put back in input order. Each image is decoded once: `i2i serve` passes
the images it decoded from the request (`images=`) and no path is opened; `i2i index`
collects each note's image status (`image_status=`) to count failures instead of
decoding the images again.

`blank="image"` replaces every image with the neutral grey one, `blank="text"` empties
title, tags and content: the quality benchmark embeds each model both ways to measure
what each modality contributes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.contracts import Note
from core.errors import UserError
from core.images import blank_image, given_image, note_image
from train.checkpoint import checkpoint_id, load_checkpoint, resolve_checkpoint
from train.collate import NoteCollator
from train.distributed import inference_device
from train.model import NoteLLM2
from train.step import autocast_for
from train.train_config import PRECISIONS

BLANKS = (None, "image", "text")


def _text_len(note: Note) -> int:
    return (
        len(note.get("title") or "")
        + len(note.get("content") or "")
        + sum(len(t) for t in note.get("tags") or [])
    )


def _model_fingerprint(model: NoteLLM2) -> str:
    h = hashlib.sha256(model.config.to_json().encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "notellm2-mem-" + h.hexdigest()[:16]


class NoteEmbedder:
    """Embed notes with a NoteLLM-2 checkpoint directory or model.

    Attributes: `model_id` (checkpoint id), `dim`, `broken_images` (image paths that
    failed to decode), `missing_images` (notes without an image or whose file is
    missing), both cumulative over calls; `model`. `confine_images=True` treats image
    paths that leave the image root (absolute, `..`, symlinks out) as missing: for notes
    from untrusted users (see `core.contracts.resolve_image`).
    """

    def __init__(
        self,
        model_or_dir: NoteLLM2 | str | Path,
        device: str | torch.device | None = None,
        image_threads: int = 4,
        blank: str | None = None,
        confine_images: bool = False,
        precision: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if blank not in BLANKS:
            raise UserError(f"unknown blank {blank!r}; choose image, text or None")
        self.blank = blank  # default for `embed`: blank this modality in every call
        self.device = inference_device(device)
        self.precision = precision
        autocast_for(precision, self.device)  # a precision this device cannot run fails here, not mid-corpus
        if isinstance(model_or_dir, (str, Path)):
            self.model = load_checkpoint(model_or_dir, device=self.device)
            self.model_id = checkpoint_id(model_or_dir)
        elif isinstance(model_or_dir, NoteLLM2):
            self.model = model_or_dir
            self.model_id = _model_fingerprint(model_or_dir)
        else:
            raise UserError(
                f"NoteEmbedder needs a checkpoint directory or a NoteLLM2, got {type(model_or_dir)}"
            )
        if blank is not None:  # other vectors than the checkpoint's: never mix them in one collection
            self.model_id = f"{self.model_id}+blank-{blank}"
        self.dim = self.model.out_dim
        self.image_threads = image_threads
        # Untrusted notes (a web service): image paths outside the image root count as missing.
        self.confine_images = confine_images
        self.broken_images = 0
        self.missing_images = 0

    def _pixels(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None,
        blank: str | None,
        images: Sequence[Image.Image | None] | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """The batch's pixels and one `IMAGE_STATUSES` value per note; each image is
        decoded once (or not at all: `images` given, or blanked)."""
        if self.model.vision is None:
            raise ValueError(f"variant {self.model.config.variant!r} reads no image")
        transform = self.model.vision.transform

        def load(i: int) -> tuple[torch.Tensor, str]:
            if blank == "image":
                return transform(blank_image()), "blanked"
            if images is not None:  # decoded by the caller; no path is opened
                image, status = given_image(images[i])
            else:
                image, status = note_image(notes[i], image_root, confine=self.confine_images)
            return transform(image), status

        if self.image_threads > 1 and len(notes) > 1:
            with ThreadPoolExecutor(max_workers=self.image_threads) as pool:
                results = list(pool.map(load, range(len(notes))))
        else:
            results = [load(i) for i in range(len(notes))]
        self.missing_images += sum(s in ("none", "missing") for _, s in results)
        self.broken_images += sum(s == "unreadable" for _, s in results)
        return torch.stack([x for x, _ in results]), [s for _, s in results]  # (B, 3, H, W), statuses

    def embed(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        blank: str | None = None,
        *,
        images: Sequence[Image.Image | None] | None = None,
        image_status: list[str] | None = None,
    ) -> np.ndarray:
        """(len(notes), dim) float32, L2-normalised, in input order (`core.contracts.Embedder`).

        `blank`: "image" (grey images) or "text" (empty fields); default `self.blank`.
        `images`: already decoded RGB images, one per note (None: no image), used instead
        of the notes' `image` paths (a server embedding uploads opens no file).
        `image_status`: receives one `core.contracts.IMAGE_STATUSES` value per note, in
        order (left untouched when the model reads no image).
        """
        if images is not None and len(images) != len(notes):
            raise ValueError(f"{len(images)} images for {len(notes)} notes")
        blank = blank if blank is not None else self.blank
        if blank not in BLANKS:
            raise UserError(f"unknown blank {blank!r}; choose image, text or None")
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        out = np.zeros((len(notes), self.dim), dtype=np.float32)
        statuses = [""] * len(notes)
        if not notes:
            return out
        model = self.model
        was_training = model.training
        if was_training:  # (each switch walks every module: milliseconds per call)
            model.eval()
        collator = NoteCollator(model.tokenizer, model.config, blank_text=blank == "text")
        order = sorted(range(len(notes)), key=lambda i: -_text_len(notes[i]))  # longest first
        with torch.inference_mode(), autocast_for(self.precision, self.device):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                chunk = [notes[i] for i in idx]
                pixels = None
                if model.uses_images:
                    chunk_images = [images[i] for i in idx] if images is not None else None
                    pixels, chunk_status = self._pixels(chunk, image_root, blank, chunk_images)
                    for i, s in zip(idx, chunk_status, strict=True):
                        statuses[i] = s
                emb = model(collator(chunk, pixels)).multimodal  # (b, dim), normalised in fp32
                out[idx] = emb.float().cpu().numpy()
        if was_training:
            model.train()
        if image_status is not None and model.uses_images:
            image_status.extend(statuses)
        return out


def embed_notes_modality(
    embedder: NoteEmbedder,
    notes: Sequence[Note],
    blank: str | None,
    image_root: str | Path | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """`embedder.embed` with one modality blanked ("image" or "text"; None = neither)."""
    return embedder.embed(notes, image_root=image_root, batch_size=batch_size, blank=blank)


def load_embedder(
    checkpoint: str | Path,
    device: str | torch.device | None = None,
    blank: str | None = None,
    precision: str = "auto",
) -> NoteEmbedder:
    """A `NoteEmbedder` for a checkpoint or a run directory (which resolves to `best/`,
    else `last/`): no grad; `precision` auto is bf16 autocast on GPU, fp32 on CPU."""
    return NoteEmbedder(resolve_checkpoint(checkpoint), device=device, blank=blank, precision=precision)
