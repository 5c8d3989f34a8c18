"""Training data: related pairs over a notes table, lazy image loading, a resumable sampler.

- `load_pairs` joins one split's pairs to the notes table: pairs whose query or target
  is missing from notes.parquet are dropped and counted, self pairs too.
- `PairDataset` / `NoteDataset` yield notes with their pixels, loading images lazily
  (in DataLoader workers) through `core.images.load_image` and the vision encoder's own
  transform. A missing or corrupt image becomes a blank one; each sample carries an
  `ImageStatus` so the main process can count failures (workers share no counters).
  The text-only variant passes `transform=None` and no image is ever opened.
- `PairBatchSampler` yields the same batches for a given (seed, epoch) on every run,
  can start mid-epoch (resume), shards each global batch across DDP ranks, and avoids
  putting a note twice into one global batch (a duplicate would be a false negative).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset, Sampler

from core.contracts import Note, notes_to_dicts, read_pairs, resolve_image
from core.images import load_image

Transform = Callable[[Any], torch.Tensor]


class ImageStatus(IntEnum):
    """What happened to one note's image."""

    LOADED = 0
    NO_IMAGE = 1  # the note names no image: a blank one is used
    BROKEN = 2  # the note names an image that is missing, unreadable or too large: blank used


@dataclass(frozen=True)
class PairSplit:
    """One split's usable pairs as indices into `notes`.

    query, target: (num_pairs,) int64 row indices into `notes`; rank: (num_pairs,) the
    pair file's rank of the target for its query (1 = best). Counters say what was
    dropped while building it. `split_rows`: rows of every note the mined split put in
    this split, pairs or not (None when the pairs directory does not record it).
    """

    notes: list[Note]
    query: np.ndarray
    target: np.ndarray
    rank: np.ndarray
    pairs_read: int
    dropped_missing_note: int
    dropped_self_pair: int
    split_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.query.shape[0])

    def note_indices(self) -> np.ndarray:
        """Sorted unique rows of `notes` in this split: every note of its pairs, plus every
        note the mined split assigned to it (`split_rows`)."""
        extra = [] if self.split_rows is None else [self.split_rows]
        return np.unique(np.concatenate([self.query, self.target, *extra]))


def load_pairs(
    notes: pl.DataFrame,
    pairs_path: Path,
    note_list: list[Note] | None = None,
    split_note_ids: Sequence[str] | None = None,
) -> PairSplit:
    """Join the pairs at `pairs_path` to `notes` (a frame from `read_notes`).

    Pairs keep the file's order (the sampler shuffles). Pass `note_list` (the frame's
    rows as dicts) when several splits share one notes table, to build it once, and
    `split_note_ids` (every note of the split, from mine-pairs' `notes_split.parquet`)
    for the reference evaluation pool; ids missing from `notes` are ignored.
    """
    pairs = read_pairs(pairs_path)
    read = pairs.height
    ids = notes.select(pl.col("note_id"), pl.int_range(pl.len(), dtype=pl.Int64).alias("row"))
    not_self = pairs.filter(pl.col("query_id") != pl.col("target_id"))
    joined = (
        not_self.with_row_index("order")
        .join(ids.rename({"note_id": "query_id", "row": "q"}), on="query_id", how="inner")
        .join(ids.rename({"note_id": "target_id", "row": "t"}), on="target_id", how="inner")
        .sort("order")
    )
    return PairSplit(
        notes=note_list if note_list is not None else notes_to_dicts(notes),
        query=joined["q"].to_numpy().astype(np.int64),
        target=joined["t"].to_numpy().astype(np.int64),
        rank=joined["rank"].to_numpy().astype(np.int64),
        pairs_read=read,
        dropped_missing_note=not_self.height - joined.height,
        dropped_self_pair=read - not_self.height,
        split_rows=None
        if split_note_ids is None
        else ids.filter(pl.col("note_id").is_in(list(split_note_ids)))["row"].to_numpy().astype(np.int64),
    )


# What datasets call to get a note's image: pixels (3, H, W) from `NoteImageLoader`, or the
# frozen encoder's cached features (1 + T, width) from `train.vision_cache`; None for text-only.
ImageLoader = Callable[[Note], "tuple[torch.Tensor | None, ImageStatus]"]


class NoteImageLoader:
    """Note -> (pixels (3, H, W) or None, ImageStatus). Runs inside DataLoader workers."""

    def __init__(self, image_root: str | Path | None, transform: Transform | None) -> None:
        self.image_root = image_root
        self.transform = transform

    def __call__(self, note: Note) -> tuple[torch.Tensor | None, ImageStatus]:
        if self.transform is None:  # text-only model: never touch the disk
            return None, ImageStatus.NO_IMAGE
        path = resolve_image(note.get("image"), self.image_root)
        image, ok = load_image(path)
        status = ImageStatus.LOADED if ok else (ImageStatus.NO_IMAGE if path is None else ImageStatus.BROKEN)
        return self.transform(image), status


class PairDataset(Dataset):
    """Pair index -> (query note, target note, query pixels, target pixels, statuses)."""

    def __init__(self, split: PairSplit, images: ImageLoader) -> None:
        self.split = split
        self.images = images

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Note, Note, torch.Tensor | None, torch.Tensor | None, int, int]:
        q = self.split.notes[int(self.split.query[i])]
        t = self.split.notes[int(self.split.target[i])]
        q_pix, q_status = self.images(q)
        t_pix, t_status = self.images(t)
        return q, t, q_pix, t_pix, int(q_status), int(t_status)


class NoteDataset(Dataset):
    """Index -> (note, pixels, status) over a list of notes (for embedding in validation)."""

    def __init__(self, notes: Sequence[Note], images: ImageLoader) -> None:
        self.notes = notes
        self.images = images

    def __len__(self) -> int:
        return len(self.notes)

    def __getitem__(self, i: int) -> tuple[Note, torch.Tensor | None, int]:
        note = self.notes[i]
        pix, status = self.images(note)
        return note, pix, int(status)


def count_statuses(statuses: Sequence[int]) -> dict[str, int]:
    """{"images_loaded", "images_absent", "images_broken"} counts for a batch."""
    arr = np.asarray(statuses, dtype=np.int64)
    return {
        "images_loaded": int((arr == ImageStatus.LOADED).sum()),
        "images_absent": int((arr == ImageStatus.NO_IMAGE).sum()),
        "images_broken": int((arr == ImageStatus.BROKEN).sum()),
    }


class PairCollate:
    """List of PairDataset items -> (model batch, image counts), laid out [q_1..q_N, t_1..t_N].

    `note_collator(notes, pixel_values)` is the model's `NoteCollator`: it renders and
    tokenizes the prompts. pixel_values: (2N, 3, H, W), or None for the text-only model.
    """

    def __init__(self, note_collator: Callable[..., dict[str, torch.Tensor]]) -> None:
        self.note_collator = note_collator

    def __call__(self, items: list[tuple]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        queries, targets, q_pix, t_pix, q_status, t_status = zip(*items, strict=True)
        notes = [*queries, *targets]
        pix = [*q_pix, *t_pix]
        pixel_values = None if pix[0] is None else torch.stack(pix)  # (2N, 3, H, W)
        return self.note_collator(notes, pixel_values), count_statuses([*q_status, *t_status])


class NoteCollate:
    """List of NoteDataset items -> (model batch, image counts)."""

    def __init__(self, note_collator: Callable[..., dict[str, torch.Tensor]]) -> None:
        self.note_collator = note_collator

    def __call__(self, items: list[tuple]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        notes, pix, status = zip(*items, strict=True)
        pixel_values = None if pix[0] is None else torch.stack(pix)  # (B, 3, H, W)
        return self.note_collator(list(notes), pixel_values), count_statuses(status)


def _unique_note_batches(
    order: np.ndarray, query: np.ndarray, target: np.ndarray, size: int, n_batches: int
) -> np.ndarray:
    """Cut `order` into `n_batches` batches of `size` pairs with no note twice in a batch.

    A pair whose query or target is already in the batch is deferred to a later batch
    (tried first there). When the permutation runs out, the last batches are filled
    with deferred pairs even if they repeat a note, so every epoch has the same length.
    Deterministic in `order`. Returns (n_batches, size) pair indices.
    """
    out = np.empty((n_batches, size), dtype=np.int64)
    pending: deque[int] = deque()
    it = iter(order.tolist())
    scan = 4 * size  # look at most this far into the deferred queue per batch (keeps it linear)
    for b in range(n_batches):
        batch: list[int] = []
        used: set[int] = set()
        kept: list[int] = []
        for _ in range(min(scan, len(pending))):
            p = pending.popleft()
            if len(batch) < size and query[p] not in used and target[p] not in used:
                batch.append(p)
                used.update((int(query[p]), int(target[p])))
            else:
                kept.append(p)
        pending.extendleft(reversed(kept))
        while len(batch) < size:
            fresh = next(it, None)
            if fresh is None:
                break
            if query[fresh] in used or target[fresh] in used:
                pending.append(fresh)
                continue
            batch.append(fresh)
            used.update((int(query[fresh]), int(target[fresh])))
        while len(batch) < size:  # permutation exhausted: relax the constraint
            batch.append(pending.popleft())
        out[b] = batch
    return out


class PairBatchSampler(Sampler[list[int]]):
    """Deterministic, resumable, rank-sharded batches of pair indices.

    Each epoch shuffles all pairs with `seed + epoch`, cuts the permutation into global
    batches of `pairs_per_rank * world_size` pairs (dropping the remainder, so every
    rank runs the same number of steps) and gives rank r the r-th slice of each global
    batch. Concatenating the ranks' batches in rank order gives exactly the batch one
    process with `pairs_per_rank * world_size` pairs sees. `set_epoch(epoch, start)`
    skips the first `start` batches of the epoch (resume mid-epoch) and `limit` caps
    the batches yielded (whole optimizer steps only).
    """

    def __init__(
        self,
        split: PairSplit,
        pairs_per_rank: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        unique_notes: bool = True,
    ) -> None:
        self.split = split
        self.pairs_per_rank = pairs_per_rank
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.unique_notes = unique_notes
        self.global_batch = pairs_per_rank * world_size
        self.batches_per_epoch = len(split) // self.global_batch
        self.epoch = 0
        self.start = 0
        self.limit: int | None = None
        self._cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int, start: int = 0, limit: int | None = None) -> None:
        self.epoch, self.start, self.limit = epoch, start, limit

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """(batches_per_epoch, global_batch) pair indices for `epoch`, the same on every rank."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.split), generator=g).numpy()
        if self.unique_notes:
            batches = _unique_note_batches(
                order, self.split.query, self.split.target, self.global_batch, self.batches_per_epoch
            )
        else:
            n = self.batches_per_epoch * self.global_batch
            batches = order[:n].reshape(self.batches_per_epoch, self.global_batch)
        self._cache = (epoch, batches)
        return batches

    def _stop(self) -> int:
        return self.batches_per_epoch if self.limit is None else min(self.batches_per_epoch, self.limit)

    def __len__(self) -> int:
        return max(0, self._stop() - self.start)

    def __iter__(self):
        batches = self.epoch_batches(self.epoch)
        lo = self.rank * self.pairs_per_rank
        for b in range(self.start, self._stop()):
            yield batches[b, lo : lo + self.pairs_per_rank].tolist()
