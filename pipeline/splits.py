"""Note-level train / val / test splits from a stable, seeded hash.

Splitting by note (not by pair) keeps evaluation notes out of training entirely: a pair
is kept only when both of its notes fall in the same split. A note's hash is the first 60
bits (15 hex digits) of SHA-256 over the UTF-8 bytes of `"{seed}:{note_id}"`, compared
with integer thresholds: so a note's split never depends on the data around it, the
machine or the library version, and every engine computes it identically (Spark SQL as
`conv(substring(sha2(concat(seed, ':', note), 256), 1, 15), 16, 10)`).
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


SPLIT_HASH_BITS = 60


def note_hash(note_ids: Sequence[str], seed: int) -> np.ndarray:
    """The split hash of each note id: an integer in [0, 2^60)."""
    prefix = f"{seed}:"
    out = np.empty(len(note_ids), np.int64)
    for i, note in enumerate(note_ids):
        out[i] = int(hashlib.sha256((prefix + note).encode()).hexdigest()[:15], 16)
    return out


def split_thresholds(shares: tuple[float, float, float]) -> tuple[int, int, tuple[int, int, int]]:
    """Integer cut points and the remapping of empty splits, shared by every engine.

    A note with hash h is in raw split 0 when h < cut_train, 1 when h < cut_val, else 2;
    `remap[raw]` is its split (a zero share never gets a note, whatever the rounding).
    """
    train, val, test = shares
    scale = 2**SPLIT_HASH_BITS
    cut_train = min(scale, round(train * scale))
    cut_val = min(scale, round((train + val) * scale))
    remap = [0, 1, 2]
    if test == 0:
        remap[2] = 1 if val > 0 else 0
    if val == 0:
        remap = [r if r != 1 else (0 if train > 0 else 2) for r in remap]
    return cut_train, cut_val, (remap[0], remap[1], remap[2])


def assign_splits(note_ids: Sequence[str], shares: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split index per note (0 train, 1 val, 2 test); a zero share gets no notes."""
    h = note_hash(note_ids, seed)
    cut_train, cut_val, remap = split_thresholds(shares)
    raw = np.where(h < cut_train, 0, np.where(h < cut_val, 1, 2))
    return np.asarray(remap, np.int8)[raw]


__all__ = ["SPLITS", "SPLIT_HASH_BITS", "assign_splits", "note_hash", "parse_split", "split_thresholds"]
