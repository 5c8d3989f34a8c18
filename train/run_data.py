"""The data a training run reads: the pair splits joined to notes, the image root, and
one DataLoader per epoch that can start mid-epoch (resume)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from torch.utils.data import DataLoader

from core.contracts import Note, notes_to_dicts, read_notes, read_split_notes
from core.errors import UserError
from train.data import (
    ImageLoader,
    NoteImageLoader,
    PairBatchSampler,
    PairCollate,
    PairDataset,
    PairSplit,
    load_pairs,
)
from train.distributed import DistEnv
from train.train_config import TrainConfig
from train.vision import VisionEncoder
from train.vision_cache import VisionFeatureCache


def load_splits(cfg: TrainConfig) -> tuple[PairSplit, PairSplit | None]:
    """Read notes once; join the train split (required) and the val split (optional).

    The val split carries every note mine-pairs assigned to it (`notes_split.parquet`),
    so validation ranks against the same reference pool as `i2i eval`.
    """
    for name in ("notes", "pairs"):
        if not getattr(cfg, name):
            raise UserError(f"no {name} given; pass --{name} (or set `{name} = ...` in the config file)")
    pairs_dir = Path(cfg.pairs)  # type: ignore[arg-type]
    if not pairs_dir.is_dir():
        raise UserError(f"pairs directory not found: {pairs_dir} (expected the --out of `i2i mine-pairs`)")
    notes_df = read_notes(cfg.notes)  # type: ignore[arg-type]
    note_list = notes_to_dicts(notes_df)
    train_split = load_pairs(notes_df, pairs_dir / "train.parquet", note_list)
    if len(train_split) == 0:
        raise UserError(
            f"no usable train pairs in {pairs_dir / 'train.parquet'}: {train_split.pairs_read} read, "
            f"{train_split.dropped_missing_note} name notes missing from {cfg.notes}, "
            f"{train_split.dropped_self_pair} are self pairs; check the pairs were mined from these notes"
        )
    val_path = pairs_dir / "val.parquet"
    val_split = (
        load_pairs(notes_df, val_path, note_list, read_split_notes(pairs_dir, "val"))
        if val_path.exists()
        else None
    )
    return train_split, val_split


def epoch_loader(
    dataset: PairDataset,
    sampler: PairBatchSampler,
    collate: PairCollate,
    cfg: TrainConfig,
    env: DistEnv,
    epoch: int,
    step_in_epoch: int,
) -> DataLoader:
    """The DataLoader for one epoch, starting at `step_in_epoch` (resume) and yielding whole steps."""
    sampler.set_epoch(
        epoch,
        start=step_in_epoch * cfg.grad_accum,
        limit=(sampler.batches_per_epoch // cfg.grad_accum) * cfg.grad_accum,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        pin_memory=env.device.type == "cuda",
        # Its own generator: the loader's base seed never draws from the global torch RNG,
        # so the model's dropout stream is the same whether or not we resumed here.
        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + env.rank),
    )


def image_root(cfg: TrainConfig) -> Path:
    """--images, or the notes file's folder (where `i2i synth` puts relative image paths)."""
    if cfg.images is None:
        return Path(cfg.notes).parent  # type: ignore[arg-type]
    root = Path(cfg.images)
    if not root.is_dir():
        raise UserError(f"image root not found: {root}; pass --images DIR (relative image paths start there)")
    return root


def split_line(name: str, split: PairSplit) -> str:
    return (
        f"{name}: {len(split)} pairs ({split.pairs_read} read, {split.dropped_missing_note} dropped: "
        f"note missing from notes; {split.dropped_self_pair} self pairs dropped)"
    )


def split_counts(train_split: PairSplit, val_split: PairSplit | None) -> dict[str, int]:
    out = {
        "train_pairs": len(train_split),
        "train_pairs_dropped_missing_note": train_split.dropped_missing_note,
        "train_pairs_dropped_self": train_split.dropped_self_pair,
    }
    if val_split is not None:
        out |= {"val_pairs": len(val_split), "val_pairs_dropped_missing_note": val_split.dropped_missing_note}
    return out


def run_notes(train_split: PairSplit, val_split: PairSplit | None) -> list[Note]:
    """Every note a run reads: the train split's, then the val split's (repeats allowed)."""
    notes = [train_split.notes[i] for i in train_split.note_indices()]
    if val_split is not None:
        notes += [val_split.notes[i] for i in val_split.note_indices()]
    return notes


def vision_cache(
    vision: VisionEncoder,
    images: NoteImageLoader,
    notes: list[Note],
    cfg: TrainConfig,
    env: DistEnv,
    console: Console,
) -> ImageLoader:
    """Encode every run note's image once (train.vision_cache) and return the cache, or
    `images` unchanged when the cache would not fit `cfg.vision_cache_max_gb`."""
    need = VisionFeatureCache.bytes_needed(vision, len(notes), env.device)
    if need > cfg.vision_cache_max_gb * 2**30:
        if env.is_main:
            console.print(
                f"vision cache off: {len(notes)} notes need {need / 2**30:.1f} GiB > "
                f"vision_cache_max_gb {cfg.vision_cache_max_gb}; encoding images at every step"
            )
        return images
    t0 = time.perf_counter()
    with Progress(console=console, disable=not env.is_main, transient=True) as progress:
        task = progress.add_task("vision cache", total=len(notes))
        cache = VisionFeatureCache.build(
            vision, notes, images, env.device, on_batch=lambda n: progress.advance(task, n)
        )
    if env.is_main:
        console.print(
            f"vision cache: {len(cache)} notes encoded once in {time.perf_counter() - t0:.1f} s "
            f"({need / 2**20:.0f} MiB)"
        )
    return cache
