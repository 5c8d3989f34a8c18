"""Note-level train / val / test splits from a stable, seeded hash.

Splitting by note (not by pair) keeps evaluation notes out of training entirely: a pair
is kept only when both of its notes fall in the same split. The hash is BLAKE2b of the
seed and the note id, so a note's split never depends on the data around it, the
machine, or the Polars version.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from core.contracts import SPLITS
from core.errors import UserError


def parse_split(text: str | Sequence[float]) -> tuple[float, float, float]:
    """'0.9,0.05,0.05' -> three finite non-negative shares normalised to sum to 1."""
    try:
        parts = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts) or sum(parts) <= 0:
        raise UserError(
            f"--split {text!r} is not three non-negative shares; "
            "expected train,val,test such as 0.9,0.05,0.05"
        )
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def note_unit(note_ids: Sequence[str], seed: int) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per note id."""
    key = str(seed).encode()
    out = np.empty(len(note_ids), np.float64)
    for i, note in enumerate(note_ids):
        digest = hashlib.blake2b(note.encode(), digest_size=8, key=key).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def assign_splits(note_ids: Sequence[str], shares: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split index per note (0 train, 1 val, 2 test); a zero share gets no notes."""
    u = note_unit(note_ids, seed)
    train, val, _ = shares
    split = np.full(len(note_ids), 2, np.int8)
    split[u < train + val] = 1
    split[u < train] = 0
    if shares[2] == 0:  # rounding must never put a note in an empty split
        split[split == 2] = 1 if shares[1] > 0 else 0
    if shares[1] == 0:
        split[split == 1] = 0 if shares[0] > 0 else 2
    return split


__all__ = ["SPLITS", "assign_splits", "note_unit", "parse_split"]
