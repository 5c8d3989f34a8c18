"""The platform a quality run measures on, and its test split.

A quality run (`benchmarks/quality.py --out OUT`) needs notes, an image root and mined
pairs. They come from one of two places:

- a built-in generator (`--data emoji` or `--data synth`): the platform is written to
  `OUT/data/` and mined into `OUT/pairs/`, and `OUT/data/truth.parquet` gives every pair
  its relation (text, image, both, none) for the slices;
- a platform of your own (`--data DIR`): `DIR/notes.parquet` with images relative to
  `DIR` (or `--images ROOT`) and view logs in `DIR/logs/`, mined into `OUT/pairs/`, or
  pairs you mined already (`--pairs PAIRS`, a `mine-pairs --out` directory). Nothing is
  written into `DIR`: `OUT/source.json` records where the platform is, so a re-run, and
  the scripts that read a finished run (`fusion_ceiling.py`, `attention_share.py`,
  `fusion_parts.py`), find it again. Without `DIR/truth.parquet` the relation slices are
  left out and the tables slice by the query's text length (the paper's slice).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from core.contracts import read_notes, read_pairs, read_split_notes
from core.errors import UserError
from core.io import write_json_atomic
from retriever.evaluate import EvalSet, build_eval_set

BUILT_IN = ("synth", "emoji")
SOURCE_FILE = "source.json"
PAIR_FILES = ("train.parquet", "val.parquet", "test.parquet")


@dataclass(frozen=True)
class QualitySource:
    """Where a quality run's platform lives."""

    label: str  # "emoji", "synth", or the name of a platform directory
    data: Path  # notes.parquet, and logs/ and truth.parquet when there are any
    images: Path  # the root that notes.parquet's image paths are relative to
    pairs: Path  # train/val/test.parquet (and notes_split.parquet when mined here)

    @property
    def notes(self) -> Path:
        return self.data / "notes.parquet"

    @property
    def truth(self) -> Path | None:
        path = self.data / "truth.parquet"
        return path if path.exists() else None

    def to_dict(self) -> dict[str, str]:
        return {
            "label": self.label,
            "data": str(self.data),
            "images": str(self.images),
            "pairs": str(self.pairs),
        }


def built_in_source(out: Path, name: str) -> QualitySource:
    """The layout of `--data emoji|synth`: everything under OUT."""
    return QualitySource(label=name, data=out / "data", images=out / "data", pairs=out / "pairs")


def user_source(
    out: Path, data: Path, images: Path | None = None, pairs: Path | None = None
) -> QualitySource:
    """A platform directory of the user's, checked; pairs default to OUT/pairs (mined there)."""
    data = data.resolve()
    if not data.is_dir():
        raise UserError(f"--data {data}: not a directory; expected emoji, synth or a platform directory")
    if not (data / "notes.parquet").is_file():
        raise UserError(
            f"--data {data}: no notes.parquet there; a platform directory holds notes.parquet and logs/"
        )
    if pairs is None:
        if not (data / "logs").is_dir():
            raise UserError(
                f"--data {data}: no logs/ to mine pairs from; add the view logs as {data}/logs/ "
                "or pass --pairs with a mine-pairs --out directory"
            )
    else:
        pairs = pairs.resolve()
        missing = [f for f in PAIR_FILES if not (pairs / f).is_file()]
        if missing:
            raise UserError(
                f"--pairs {pairs}: {', '.join(missing)} missing; expected a mine-pairs --out directory"
            )
    images = (images or data).resolve()
    if not images.is_dir():
        raise UserError(f"--images {images}: not a directory")
    return QualitySource(label=data.name, data=data, images=images, pairs=pairs or (out / "pairs").resolve())


def record_source(out: Path, source: QualitySource) -> None:
    """Write OUT/source.json, or check that it names the same platform: a run directory
    holds the runs of one platform and one split, so another platform needs another OUT."""
    path = out / SOURCE_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != source.to_dict():
            raise UserError(
                f"--out {out} holds a quality run on {saved.get('data')} (images {saved.get('images')}, "
                f"pairs {saved.get('pairs')}); use another --out for {source.data}"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, source.to_dict())


def quality_source(out: Path) -> QualitySource:
    """The platform of a finished (or started) quality run."""
    path = out / SOURCE_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        return QualitySource(
            label=saved["label"],
            data=Path(saved["data"]),
            images=Path(saved["images"]),
            pairs=Path(saved["pairs"]),
        )
    for name in BUILT_IN:
        if (out / "data" / f"{name}.json").exists():
            return built_in_source(out, name)
    raise UserError(
        f"{out} is not a quality run; run benchmarks/quality.py --out {out} first (it makes the split)"
    )


def quality_eval_set(out: Path) -> EvalSet:
    """The test split of quality run `out` (see `source_eval_set`; used by
    `fusion_ceiling.py`, `attention_share.py`, `fusion_parts.py` and `reachability.py`)."""
    return source_eval_set(quality_source(out), out)


def source_eval_set(source: QualitySource, out: Path) -> EvalSet:
    """The test split of `source`: the greedy queries, the reference pool and the slices
    that every method is scored on."""
    for path in (source.notes, source.pairs / "test.parquet"):
        if not path.exists():
            raise UserError(
                f"{path} not found; run benchmarks/quality.py --out {out} first (it makes the split)"
            )
    truth = source.truth
    return build_eval_set(
        read_notes(source.notes),
        read_pairs(source.pairs / "test.parquet"),
        pl.read_parquet(truth) if truth is not None else None,
        "test",
        split_notes=read_split_notes(source.pairs, "test"),
    )
