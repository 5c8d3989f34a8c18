"""Data contracts shared by every stage.

- logs: `user_id`, `note_id`, `ts` (+ optional `event`), Parquet or CSV.
- notes: Parquet; `note_id` (str), `title`, `content`, optional `tags` (list[str]),
  `image` (path relative to an image root, or absolute).
- pairs: Parquet per split; `query_id`, `target_id`, `score`, `rank`. A mine-pairs
  directory also holds `notes_split.parquet` (`note_id`, `split`): the split of every
  note seen in the logs, including notes with no pair (evaluation pools use it).

A `Note` is a plain dict with the keys `note_id`, `title`, `content`, `tags` (list of
str, content `#tag#` hashtags merged in) and `image` (str or None). Stages pass notes as
lists of these dicts, or as Polars frames with the same columns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import polars as pl

from core.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

LOG_COLUMNS = ("user_id", "note_id", "ts")
NOTE_REQUIRED_COLUMNS = ("note_id", "title", "content")
NOTE_OPTIONAL_COLUMNS = ("tags", "image")
PAIR_COLUMNS = ("query_id", "target_id", "score", "rank")
SPLITS = ("train", "val", "test")
NOTES_SPLIT_FILE = "notes_split.parquet"

Note = dict[str, Any]

_HASHTAG = re.compile(r"#([^#\s][^#]{0,63}?)#")
_NEWLINES = re.compile(r"\s*[\r\n]+\s*")
# The reference drops a hashtag longer than this, counting both '#' (so 14 characters inside).
HASHTAG_MAX_CHARS = 16


def extract_hashtags(content: str) -> list[str]:
    """The `#tag#` hashtags in `content` that the reference keeps, in order, without the
    hashes: a hashtag over `HASHTAG_MAX_CHARS` characters counting both '#' is dropped."""
    if not content or "#" not in content:
        return []
    tags = [m.strip() for m in _HASHTAG.findall(content)]
    return [t for t in tags if t and len(t) + 2 <= HASHTAG_MAX_CHARS]


def strip_hashtags(content: str) -> str:
    """`content` with every `#tag#` pulled out (they live in the tags) and newlines
    normalised to single spaces, as the reference does before truncating."""
    text = _HASHTAG.sub(" ", content or "")
    return re.sub(r"[ \t]{2,}", " ", _NEWLINES.sub(" ", text)).strip()


def merge_tags(tags: Sequence[str] | None, content: str) -> list[str]:
    """Explicit tags first, then content hashtags (`extract_hashtags`); duplicates dropped,
    order kept."""
    out: list[str] = []
    for tag in [*(tags or []), *extract_hashtags(content)]:
        if tag and tag not in out:
            out.append(tag)
    return out


def read_notes(path: str | Path) -> pl.DataFrame:
    """Read and validate a notes Parquet file.

    Returns a frame with exactly `note_id, title, content, tags, image` (`tags` a list of
    strings with content hashtags merged in, `image` nullable). Raises `UserError` for a
    missing file or column, null or duplicate note ids.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"notes file not found: {path} (expected a Parquet file of notes)")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise UserError(f"cannot read notes file {path}: {exc}") from None
    missing = [c for c in NOTE_REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(
            f"notes file {path} lacks column(s) {', '.join(missing)}; "
            f"found {', '.join(df.columns) or 'none'}; expected {', '.join(NOTE_REQUIRED_COLUMNS)}"
            " (+ optional tags, image)"
        )
    df = df.with_columns(pl.col("note_id").cast(pl.Utf8))
    nulls = df["note_id"].null_count()
    if nulls:
        raise UserError(f"notes file {path} has {nulls} row(s) with a null note_id; fill or drop them")
    dup = df["note_id"].is_duplicated()
    if dup.any():
        examples = df.filter(dup)["note_id"].unique().head(3).to_list()
        raise UserError(
            f"notes file {path} has {int(dup.sum())} rows with duplicate note_id "
            f"(e.g. {', '.join(examples)}); note ids must be unique"
        )
    if "tags" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.List(pl.Utf8)).alias("tags"))
    if "image" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias("image"))
    df = df.with_columns(
        pl.col("title").cast(pl.Utf8).fill_null(""),
        pl.col("content").cast(pl.Utf8).fill_null(""),
        pl.col("image").cast(pl.Utf8),
    )
    import pyarrow as pa  # here, not at import: `i2i related` imports this module, never reads notes

    merged = [merge_tags(t, c) for t, c in zip(df["tags"].to_list(), df["content"].to_list(), strict=True)]
    # Through Arrow: Polars builds a list column from Python lists one Series per row (8x slower).
    df = df.with_columns(pl.Series("tags", pa.array(merged, pa.list_(pa.large_string()))))
    return df.select("note_id", "title", "content", "tags", "image")


def read_pairs(path: str | Path) -> pl.DataFrame:
    """Read one split's pairs Parquet: `query_id`, `target_id` (as strings) and `rank`.

    A file without `rank` gets rank 1 everywhere; a missing file or id column is a
    `UserError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"pairs file not found: {path} (expected the output of `i2i mine-pairs`)")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise UserError(f"cannot read pairs file {path}: {exc}") from None
    missing = [c for c in ("query_id", "target_id") if c not in df.columns]
    if missing:
        raise UserError(
            f"pairs file {path} lacks column(s) {', '.join(missing)}; expected {', '.join(PAIR_COLUMNS)}"
        )
    if "rank" not in df.columns:
        df = df.with_columns(pl.lit(1).alias("rank"))
    return df.select(pl.col("query_id").cast(pl.Utf8), pl.col("target_id").cast(pl.Utf8), pl.col("rank"))


def read_split_notes(pairs_dir: str | Path, split: str) -> list[str] | None:
    """Ids of every note the mined split put in `split` (from `notes_split.parquet` in a
    mine-pairs directory), or None when the directory has no such file (pairs from
    elsewhere, or mined before the file existed)."""
    path = Path(pairs_dir) / NOTES_SPLIT_FILE
    if not path.exists():
        return None
    try:
        df = pl.read_parquet(path, columns=["note_id", "split"])
    except Exception as exc:
        raise UserError(
            f"cannot read {path}: {str(exc).splitlines()[0]}; expected note_id, split (re-run mine-pairs)"
        ) from None
    return df.filter(pl.col("split") == split)["note_id"].cast(pl.Utf8).to_list()


def text_length(note: Note) -> int:
    """Characters of title + content: the short/long text slices and length grouping."""
    return len(note.get("title") or "") + len(note.get("content") or "")


def notes_to_dicts(df: pl.DataFrame) -> list[Note]:
    """Frame from `read_notes` -> list of `Note` dicts."""
    return df.select("note_id", "title", "content", "tags", "image").to_dicts()


def resolve_image(image: str | None, image_root: str | Path | None, *, confine: bool = False) -> Path | None:
    """An image path from the notes table, resolved against the image root.

    `confine=True` (for paths that come from untrusted users, as in a web service)
    returns None for a path that leaves the image root: an absolute path, or one whose
    `..` parts or symlinks lead outside it. Such a note is treated as having no image.
    """
    if not image:
        return None
    p = Path(image)
    if confine:
        return image_within_root(image, image_root)
    if p.is_absolute() or image_root is None:
        return p
    return Path(image_root) / p


def image_within_root(image: str, image_root: str | Path | None) -> Path | None:
    """`image_root / image` when it stays inside `image_root` (symlinks resolved), else None."""
    p = Path(image)
    if image_root is None or p.is_absolute() or p.drive:
        return None
    root = Path(image_root).resolve()
    candidate = (root / p).resolve()
    if candidate != root and root not in candidate.parents:
        return None
    return Path(image_root) / p


@runtime_checkable
class Embedder(Protocol):
    """What the indexer and evaluator need from a model.

    `model_id` identifies the checkpoint (a collection refuses vectors of another one);
    `embed` returns L2-normalised float32 vectors of shape (len(notes), dim), in order.
    Each image is decoded at most once, by the embedder or by its caller:

    - `images`: images the caller already decoded, one per note (None: no image), used
      instead of the notes' `image` paths (`i2i serve`: no path is opened);
    - `image_status`: an embedder that reads images appends one `IMAGE_STATUSES` value
      per note, in order (`i2i index` counts failures from it instead of decoding the
      images again); one that reads no image ignores `images` and leaves it untouched.
    """

    model_id: str
    dim: int

    def embed(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        *,
        images: Sequence[Image.Image | None] | None = None,
        image_status: list[str] | None = None,
    ) -> np.ndarray: ...


# What an embedder reports per note: "ok" (decoded), "none" (the note has no image),
# "missing" (no file at the path), "unreadable" (not decodable), "blanked" (asked to
# leave the image out). Every case but "ok" embeds a blank image.
IMAGE_STATUSES = ("ok", "none", "missing", "unreadable", "blanked")
