"""Note vectors as Parquet shards: embed once (on many GPUs), then index and evaluate from them.

Layout of a vectors directory: `part-{shard:05d}-of-{shards:05d}-{part:06d}.parquet`, each
with the columns `note_id` (str), `content_hash` (str, `indexer.content`), `model_id`
(str) and `vector` (fixed-size list of float32).

- Sharding: a note belongs to shard `note_shard(note_id, shards)`, the first 60 bits of
  SHA-256 of its id modulo the shard count: stable across machines, runs and library
  versions. Under `torchrun` each rank embeds shard RANK of WORLD_SIZE (or `--shard i/N`).
- Parts: a shard's notes, in note-id order, are cut into parts of `part_size` notes.
  Each part is written atomically (temporary name, then rename), so a part file that
  exists is complete. A re-run skips every part whose file holds exactly the expected
  note ids, content hashes and model: a killed rank re-runs only unfinished parts.
- Reading (`VectorFiles`): every part in the directory, one model only; a note present
  twice (parts of two shard layouts) must agree, else the directory is refused.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from core.contracts import Embedder, Note, notes_to_dicts
from core.errors import UserError
from indexer.content import content_hash

DEFAULT_PART_SIZE = 10_000
PART_GLOB = "part-*-of-*-*.parquet"


def note_shard(note_ids: Sequence[str], shards: int) -> np.ndarray:
    """The shard (0..shards-1) of each note id: SHA-256's first 60 bits modulo `shards`."""
    out = np.empty(len(note_ids), np.int64)
    for i, note in enumerate(note_ids):
        out[i] = int(hashlib.sha256(str(note).encode()).hexdigest()[:15], 16) % shards
    return out


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/N' -> (i, N); None -> the torchrun rank and world size (RANK, WORLD_SIZE), else (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        i, n = -1, 0
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r} is not I/N with 0 <= I < N; e.g. --shard 0/4")
    return i, n


def part_name(shard: int, shards: int, part: int) -> str:
    return f"part-{shard:05d}-of-{shards:05d}-{part:06d}.parquet"


def _schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("note_id", pa.string()),
            ("content_hash", pa.string()),
            ("model_id", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def write_part(
    path: Path, ids: Sequence[str], hashes: Sequence[str], model_id: str, vecs: np.ndarray
) -> None:
    """One part file, atomically (a temporary name in the same directory, then rename)."""
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    dim = vecs.shape[1]
    flat = pa.array(vecs.reshape(-1), pa.float32())
    table = pa.table(
        [
            pa.array(list(ids), pa.string()),
            pa.array(list(hashes), pa.string()),
            pa.array([model_id] * len(ids), pa.string()),
            pa.FixedSizeListArray.from_arrays(flat, dim),
        ],
        schema=_schema(dim),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _part_is_done(path: Path, ids: Sequence[str], hashes: Sequence[str], model_id: str) -> bool:
    if not path.exists():
        return False
    try:
        have = pl.read_parquet(path, columns=["note_id", "content_hash", "model_id"])
    except Exception:  # unreadable (e.g. a foreign file): embed again
        return False
    return (
        have["note_id"].to_list() == list(ids)
        and have["content_hash"].to_list() == list(hashes)
        and bool((have["model_id"] == model_id).all())
    )


@dataclass
class EmbedSummary:
    """What one rank of `embed_to_vectors` did."""

    out: str
    model_id: str
    dim: int
    shard: int
    shards: int
    notes: int = 0  # notes in this shard
    parts: int = 0
    parts_done_before: int = 0  # skipped: complete from an earlier run
    embedded: int = 0
    seconds: float = 0.0


def check_vectors_dir(out: str | Path) -> Path:
    """Refuse an `--out` that is a file or holds anything but vector parts (a `UserError`
    naming the path); call it before loading a model to fail fast. Returns `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; choose another path")
    foreign = (
        [p.name for p in out.iterdir() if not p.name.startswith(("part-", ".part-"))] if out.exists() else []
    )
    if foreign:
        raise UserError(
            f"--out {out} holds files that are not vector parts (e.g. {foreign[0]}); choose an empty or "
            "vectors directory"
        )
    return out


def embed_to_vectors(
    notes: pl.DataFrame,
    embedder: Embedder,
    out: str | Path,
    *,
    image_root: str | Path | None,
    shard: int = 0,
    shards: int = 1,
    part_size: int = DEFAULT_PART_SIZE,
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
) -> EmbedSummary:
    """Embed this shard's notes into part files under `out` (see the module docstring)."""
    t0 = time.perf_counter()
    if part_size < 1:
        raise UserError(f"--part-size {part_size} must be at least 1")
    out = check_vectors_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    model_id, dim = embedder.model_id, int(embedder.dim)
    mine = notes.filter(pl.Series(note_shard(notes["note_id"].to_list(), shards) == shard)).sort("note_id")
    todo: list[Note] = notes_to_dicts(mine)
    summary = EmbedSummary(
        out=str(out), model_id=model_id, dim=dim, shard=shard, shards=shards, notes=len(todo)
    )
    starts = range(0, len(todo), part_size)
    summary.parts = len(starts)
    if on_progress:
        on_progress(0, len(todo))
    for part, start in enumerate(starts):
        batch = todo[start : start + part_size]
        ids = [n["note_id"] for n in batch]
        hashes = [content_hash(n, image_root) for n in batch]
        path = out / part_name(shard, shards, part)
        if _part_is_done(path, ids, hashes, model_id):
            summary.parts_done_before += 1
        else:
            vecs = np.asarray(embedder.embed(batch, image_root=image_root, batch_size=batch_size), np.float32)
            if vecs.shape != (len(batch), dim) or not np.isfinite(vecs).all():
                raise RuntimeError(
                    f"embedder {model_id} returned bad vectors (shape {vecs.shape}) for part {part}"
                )
            write_part(path, ids, hashes, model_id, vecs)
            summary.embedded += len(batch)
        if on_progress:
            on_progress(start + len(batch), len(todo))
    # Parts beyond this run's count are left by a larger shard of an earlier notes table.
    for stale in out.glob(f"part-{shard:05d}-of-{shards:05d}-*.parquet"):
        if int(stale.stem.rsplit("-", 1)[1]) >= summary.parts:
            stale.unlink()
    summary.seconds = time.perf_counter() - t0
    return summary


class VectorFiles:
    """The vectors of a directory of parts, looked up by note id; an `Embedder` over them.

    `embed(notes)` returns the stored vectors and refuses notes that are absent or whose
    content changed since they were embedded (their content hash differs): re-run
    `i2i embed` for those. So `i2i index --vectors` and `i2i eval --vectors` keep the
    model guard (the collection records `model_id`) and never index stale vectors.
    """

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        parts = sorted(folder.glob(PART_GLOB)) if folder.is_dir() else []
        if not parts:
            raise UserError(f"no vector parts ({PART_GLOB}) in {folder}; write them with `i2i embed`")
        tables = [pq.read_table(p) for p in parts]
        models = sorted({m for t in tables for m in t.column("model_id").unique().to_pylist()})
        if len(models) != 1:
            raise UserError(
                f"{folder} mixes vectors of {len(models)} models ({', '.join(models[:3])}); "
                "keep one model per vectors directory"
            )
        table = pa.concat_tables(tables)
        ids = table.column("note_id").to_pylist()
        hashes = table.column("content_hash").to_pylist()
        vec_col = table.column("vector").combine_chunks()
        dim = vec_col.type.list_size
        vecs = (
            vec_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)
        )
        index: dict[str, int] = {}
        for row, note in enumerate(ids):
            seen = index.setdefault(note, row)
            if seen != row and (hashes[seen] != hashes[row] or not np.array_equal(vecs[seen], vecs[row])):
                raise UserError(
                    f"{folder} holds note {note!r} twice with different vectors (parts of two runs); "
                    "remove the older parts"
                )
        self.folder = folder
        self.model_id: str = models[0]
        self.dim: int = int(dim)
        self.parts = len(parts)
        self._index = index
        self._hashes = hashes
        self._vecs = vecs

    def __len__(self) -> int:
        return len(self._index)

    def embed(
        self,
        notes: Sequence[Note],
        image_root: str | Path | None = None,
        batch_size: int = 32,
        *,
        images: Sequence[Any] | None = None,  # stored vectors: no image is read
        image_status: list[str] | None = None,  # left untouched
    ) -> np.ndarray:
        return self.lookup([n["note_id"] for n in notes], [content_hash(n, image_root) for n in notes])

    def lookup(self, note_ids: Sequence[str], digests: Sequence[str]) -> np.ndarray:
        """The stored vectors of notes whose content hashes are `digests` (computed by the caller)."""
        rows = []
        missing: list[str] = []
        stale: list[str] = []
        for note, digest in zip(note_ids, digests, strict=True):
            row = self._index.get(note)
            if row is None:
                missing.append(note)
            elif self._hashes[row] != digest:
                stale.append(note)
            rows.append(row if row is not None else 0)
        if missing or stale:
            what = f"{len(missing)} note(s) missing (e.g. {missing[:3]})" if missing else ""
            if stale:
                what += ("; " if what else "") + f"{len(stale)} changed since embedding (e.g. {stale[:3]})"
            raise UserError(
                f"vectors in {self.folder} do not cover the notes: {what}; re-run `i2i embed` first"
            )
        return self._vecs[np.asarray(rows, np.int64)]

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "model_id": self.model_id, "dim": self.dim, "notes": len(self)}
