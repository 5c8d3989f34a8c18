"""Baselines evaluated by the same harness, on the same pool, as the model.

- BM25 (`bm25s`) on the note text (title + tags + content): the query note's text is the
  query, the pool notes are the corpus.
- Image only: frozen vision features (the CLS / pooled feature of a vision encoder),
  L2-normalised, dot product. The encoder is the checkpoint's own frozen vision encoder
  when it has one, else the offline ImageNet EfficientNet-Lite0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core.contracts import Note
from core.images import given_image, note_image
from retriever.evaluate import EvalSet

if TYPE_CHECKING:
    from PIL import Image


def note_text(note: Note) -> str:
    """What BM25 reads: title, tags and content."""
    return " ".join([note.get("title") or "", " ".join(note.get("tags") or []), note.get("content") or ""])


def bm25_scorer(eval_set: EvalSet) -> Callable[[list[int]], np.ndarray]:
    """`score_rows` for `evaluate_scores`: BM25 scores of queries against the pool."""
    import bm25s

    corpus = bm25s.tokenize([note_text(n) for n in eval_set.pool], stopwords="en", show_progress=False)
    index = bm25s.BM25()
    index.index(corpus, show_progress=False)
    queries = bm25s.tokenize(
        [note_text(n) for n in eval_set.queries], stopwords="en", return_ids=False, show_progress=False
    )
    pool = len(eval_set.pool)

    def score_rows(idx: list[int]) -> np.ndarray:
        # Tokens unknown to the corpus score nothing; an empty query scores all zeros.
        return np.stack(
            [index.get_scores(queries[i]) if queries[i] else np.zeros(pool, np.float32) for i in idx]
        )

    return score_rows


class VisionFeatureEmbedder:
    """An `Embedder` that looks only at the image: frozen encoder CLS feature, normalised.

    Notes without a readable image get the blank (grey) image's feature, and so tie with
    each other; the harness counts ties by their expectation under random tie-breaking.
    """

    def __init__(self, vision: Any, model_id: str, device: str | None = None) -> None:
        self.vision = vision.eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.vision.to(self.device)
        self.model_id = model_id
        self.dim = int(vision.width)
        self.broken_images = 0

    def embed(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        *,
        images: Sequence[Image.Image | None] | None = None,
        image_status: list[str] | None = None,
    ) -> np.ndarray:
        """`core.contracts.Embedder.embed`: the CLS features, L2-normalised."""
        cls = self.features(notes, image_root, batch_size, images=images, image_status=image_status)
        return cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12)

    def features(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        *,
        images: Sequence[Image.Image | None] | None = None,
        image_status: list[str] | None = None,
    ) -> np.ndarray:
        """The encoder's CLS feature per note, (len(notes), width) float32, as it comes
        out (not normalised); each image decoded once (or given in `images`)."""
        if images is not None and len(images) != len(notes):
            raise ValueError(f"{len(images)} images for {len(notes)} notes")

        def load(i: int) -> tuple[torch.Tensor, str]:
            # decoded by the caller (no path is opened), or read from the note's path
            image, status = given_image(images[i]) if images is not None else note_image(notes[i], image_root)
            return self.vision.transform(image), status

        out = np.zeros((len(notes), self.dim), np.float32)
        with ThreadPoolExecutor(max_workers=4) as pool, torch.inference_mode():
            for s in range(0, len(notes), batch_size):
                loaded = list(pool.map(load, range(s, min(s + batch_size, len(notes)))))
                self.broken_images += sum(status in ("missing", "unreadable") for _, status in loaded)
                if image_status is not None:
                    image_status.extend(status for _, status in loaded)
                pixels = torch.stack([x for x, _ in loaded]).to(self.device)
                cls, _ = self.vision(pixels)  # (b, width)
                out[s : s + len(pixels)] = cls.float().cpu().numpy()
        return out


def image_only_embedder(
    checkpoint: str | Path | None = None, device: str | None = None
) -> VisionFeatureEmbedder:
    """The checkpoint's frozen vision encoder, or EfficientNet-Lite0 (ImageNet) without one."""
    from train.vision import build_vision

    if checkpoint is not None:
        from train.checkpoint import load_checkpoint, resolve_checkpoint

        ckpt = resolve_checkpoint(checkpoint)
        model = load_checkpoint(ckpt)
        if getattr(model, "vision", None) is not None:
            return VisionFeatureEmbedder(model.vision, f"vision-of:{ckpt}", device)
    return VisionFeatureEmbedder(build_vision("efficientnet-lite0"), "efficientnet-lite0-imagenet", device)


def embedding_scorer(
    embedder: Any, eval_set: EvalSet, image_root: str | Path | None = None, batch_size: int = 32
) -> Callable[[list[int]], np.ndarray]:
    """`score_rows` for `evaluate_scores` from an embedder (dot products against the pool)."""
    q = embedder.embed(eval_set.queries, image_root=image_root, batch_size=batch_size)
    p = embedder.embed(eval_set.pool, image_root=image_root, batch_size=batch_size)
    return lambda idx: q[idx] @ p.T


class BlankedEmbedder:
    """A NoteEmbedder seeing one modality only: `blank="image"` (grey images) or "text"
    (empty title, tags and content). Lets the harness measure what each modality adds."""

    def __init__(self, embedder: Any, blank: str) -> None:
        if blank not in ("image", "text"):
            raise ValueError(f"blank must be 'image' or 'text', got {blank!r}")
        self.inner = embedder
        self.blank = blank
        self.dim = embedder.dim
        self.model_id = f"{embedder.model_id}+blank-{blank}"

    def embed(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        *,
        images: Sequence[Image.Image | None] | None = None,
        image_status: list[str] | None = None,
    ) -> np.ndarray:
        return self.inner.embed(
            notes,
            image_root=image_root,
            batch_size=batch_size,
            blank=self.blank,
            images=images,
            image_status=image_status,
        )
