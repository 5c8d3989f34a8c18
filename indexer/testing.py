"""A stand-in `Embedder` for tests of the store and the index job (not a product path).

`HashingEmbedder` embeds a note as a signed hashed bag of words over title, tags and
content: deterministic, instant, no model. Notes that share words get similar vectors,
so ANN-vs-exact and `related` tests see real neighbourhoods.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.contracts import Note

_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """Signed feature hashing of words into `dim` buckets, L2-normalised."""

    def __init__(self, dim: int = 32, model_id: str | None = None) -> None:
        self.dim = dim
        self.model_id = model_id or f"hashing-bow-d{dim}"
        self.calls = 0  # notes embedded so far (tests assert incremental behaviour)

    def _bucket(self, word: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        return h % self.dim, (1.0 if (h >> 32) & 1 else -1.0)

    def embed(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        *,
        images: Sequence[Any] | None = None,  # reads no image: ignored
        image_status: list[str] | None = None,  # reads no image: left untouched
    ) -> np.ndarray:
        out = np.zeros((len(notes), self.dim), np.float32)
        for row, note in enumerate(notes):
            text = " ".join([note.get("title") or "", *(note.get("tags") or []), note.get("content") or ""])
            for word in _WORD.findall(text.lower()):
                j, sign = self._bucket(word)
                out[row, j] += sign
            if not out[row].any():  # empty text: a fixed direction rather than a zero vector
                out[row, 0] = 1.0
        self.calls += len(notes)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
