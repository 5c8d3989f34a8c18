"""The index job: embed a notes table with one model and write it to a collection.

- Incremental: the collection is scrolled for (point id, content hash); only notes that
  are new, or whose `content_hash` (indexer.content) changed, are embedded
  (`full=True` embeds everything again). The model is checked once per collection (its
  metadata), not per point: a collection never holds two models' vectors.
- Resumable: vectors are upserted batch by batch as they are computed, under point ids
  derived from note ids. A killed run keeps its finished batches; the re-run finds them
  unchanged and embeds only the rest. Re-running a finished job embeds nothing.
- Safe: a collection that holds another model's or dimension's vectors is refused
  (`recreate=True` replaces it on purpose).
- Notes that left the table stay in the collection by default and are reported
  (`prune=True` deletes them): a partial notes file must not silently empty an index.
  Pruning more than `max_prune_share` of the collection (default 20%) is refused before
  anything is written, unless `force=True`: an empty or truncated notes table with
  `--prune` would otherwise wipe the collection.
- Images that are missing or unreadable are embedded with a blank image (as training
  does) and counted, with examples, in the summary; never skipped silently.
- From vectors (`indexer.vectors.VectorFiles`, written by `i2i embed`): nothing is
  embedded; each note's stored vector is used if its content hash still matches (else
  the run is refused: re-embed), and images are not decoded again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.contracts import Embedder, Note, read_notes, resolve_image
from core.errors import UserError
from core.images import note_image
from indexer.content import content_hash_of
from indexer.store import CollectionMeta, VectorStore, ensure_collection, point_id
from indexer.vectors import VectorFiles

ProgressFn = Callable[[int, int], None]  # (notes done, notes to embed)
DEFAULT_MAX_PRUNE_SHARE = 0.2
_ABSENT = object()  # a point that is not in the collection (a stored hash may be None)


@dataclass
class IndexSummary:
    """What one run of the index job did."""

    location: str
    model_id: str
    dim: int
    collection: str  # "created", "opened" or "recreated"
    notes: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    embedded: int = 0
    not_in_table: int = 0  # points whose note left the table (kept unless pruned)
    pruned: int = 0
    no_image: int = 0
    image_missing: int = 0
    image_unreadable: int = 0
    image_examples: list[str] = field(default_factory=list)
    points: int = 0
    seconds: float = 0.0

    @property
    def notes_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def note_payload(note_id: str, title: str | None, digest: str) -> dict[str, str]:
    """The payload stored with a note's vector: what `related` shows (`note_id`, `title`)
    and what makes re-indexing incremental (`content_hash`).

    The model is not repeated per point: the collection records it once
    (`CollectionMeta`, checked by `ensure_collection` before anything is read or written),
    and each payload string costs Qdrant Edge about 2.5 us of CPU to convert. Collections
    written before this still carry `model_id` in their payloads; it is ignored.
    """
    return {"note_id": note_id, "title": title or "", "content_hash": digest}


def _image_status(note: Note, image_root: str | Path | None) -> str:
    """What an embedder that reads images would report for `note` (a small decode)."""
    return note_image(note, image_root, max_side=64)[1]


def _count_images(
    notes: list[Note], statuses: list[str], image_root: str | Path | None, summary: IndexSummary
) -> None:
    """Count notes whose image is absent, missing on disk or undecodable (kept, blank image)."""
    for note, status in zip(notes, statuses, strict=True):
        if status == "none":
            summary.no_image += 1
        elif status in ("missing", "unreadable"):
            if status == "missing":
                summary.image_missing += 1
            else:
                summary.image_unreadable += 1
            if len(summary.image_examples) < 5:
                path = resolve_image(note.get("image"), image_root)
                summary.image_examples.append(f"{note['note_id']}: {path} ({status})")


def _embed_checked(
    embedder: Embedder, notes: list[Note], image_root: str | Path | None, batch: int
) -> tuple[np.ndarray, list[str]]:
    """The vectors (shape and values checked) and each note's image status: the
    embedder's own report, or (an embedder that reads no image) a check here."""
    statuses: list[str] = []
    vecs = embedder.embed(notes, image_root=image_root, batch_size=batch, image_status=statuses)
    if len(statuses) != len(notes):
        statuses = [_image_status(n, image_root) for n in notes]
    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.shape != (len(notes), embedder.dim):
        raise RuntimeError(
            f"embedder {embedder.model_id} returned shape {vecs.shape}, "
            f"expected ({len(notes)}, {embedder.dim})"
        )
    if not np.isfinite(vecs).all():
        bad = [n["note_id"] for n, ok in zip(notes, np.isfinite(vecs).all(axis=1), strict=True) if not ok]
        raise RuntimeError(f"embedder {embedder.model_id} produced non-finite vectors for notes {bad[:5]}")
    return vecs, statuses


def index_notes(
    notes: str | Path | pl.DataFrame,
    embedder: Embedder,
    store: VectorStore,
    image_root: str | Path | None = None,
    *,
    full: bool = False,
    prune: bool = False,
    recreate: bool = False,
    batch_size: int = 256,
    embed_batch_size: int = 32,
    optimize: bool = True,
    max_prune_share: float = DEFAULT_MAX_PRUNE_SHARE,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> IndexSummary:
    """Bring `store`'s collection up to date with `notes` under `embedder`'s model.

    `notes` is a notes Parquet path (validated by `read_notes`) or a frame from it;
    `image_root` resolves relative image paths (default: the notes file's folder).
    Upserts every `batch_size` notes; the embedder sees `embed_batch_size` at a time.
    `on_progress(done, total)` follows embedding; `on_stage(name)` announces the slow
    steps after it ("optimize": building the HNSW index can take minutes at 1M notes).
    """
    t0 = time.perf_counter()
    if not isinstance(notes, pl.DataFrame):
        if image_root is None:
            image_root = Path(notes).parent
        notes = read_notes(notes)
    meta = CollectionMeta(model_id=embedder.model_id, dim=int(embedder.dim))
    status = ensure_collection(store, meta, recreate=recreate)
    summary = IndexSummary(location=store.location, model_id=meta.model_id, dim=meta.dim, collection=status)

    # The table as columns: one Python list per column, not a dict per note (3x cheaper).
    table = notes.select("note_id", "title", "content", "tags", "image")
    note_ids: list[str] = table["note_id"].to_list()
    titles: list[str | None] = table["title"].to_list()
    contents: list[str | None] = table["content"].to_list()
    tags: list[list[str] | None] = table["tags"].to_list()
    images: list[str | None] = table["image"].to_list()
    pids = [point_id(n) for n in note_ids]
    digests = [
        content_hash_of(t, c, g, im, image_root)
        for t, c, g, im in zip(titles, contents, tags, images, strict=True)
    ]

    # Unchanged = same content hash. The model needs no check per point: the collection
    # holds one model's vectors (`ensure_collection` above refused any other).
    stored = {pid: p.get("content_hash") for pid, p in store.scroll(["content_hash"])}
    pending: list[int] = []  # rows of the table to (re-)index
    for row, (pid, digest) in enumerate(zip(pids, digests, strict=True)):
        have = stored.get(pid, _ABSENT)
        if have is _ABSENT:
            summary.new += 1
        elif have != digest:
            summary.changed += 1
        else:
            summary.unchanged += 1
            if not full:
                continue
        pending.append(row)
    wanted = set(pids)
    summary.notes = len(wanted)
    gone = [pid for pid in stored if pid not in wanted]
    summary.not_in_table = len(gone)
    if prune and gone and not force and len(gone) > max_prune_share * len(stored):
        raise UserError(
            f"--prune would delete {len(gone):,} of the {len(stored):,} points in {store.location} "
            f"({len(gone) / len(stored):.0%}; the notes table has {summary.notes:,} notes), more than "
            f"--max-prune {max_prune_share:.0%}; check the notes table, or pass --force to prune anyway"
        )

    # Embedded earlier (`i2i embed`): vectors are looked up, and the hashes are known.
    vector_files = embedder if isinstance(embedder, VectorFiles) else None
    if vector_files is None:
        # Similar lengths in one batch: less padding for the model (and stable batches).
        pending.sort(key=lambda row: len(titles[row] or "") + len(contents[row] or ""))
    if on_progress:
        on_progress(0, len(pending))

    def note(row: int) -> Note:
        return {
            "note_id": note_ids[row],
            "title": titles[row] or "",
            "content": contents[row] or "",
            "tags": tags[row] or [],
            "image": images[row],
        }

    def batches() -> Iterator[tuple[list[str], np.ndarray, list[dict[str, Any]]]]:
        for start in range(0, len(pending), batch_size):
            rows = pending[start : start + batch_size]
            if vector_files is not None:
                vecs = vector_files.lookup([note_ids[r] for r in rows], [digests[r] for r in rows])
            else:
                batch = [note(r) for r in rows]
                vecs, statuses = _embed_checked(embedder, batch, image_root, embed_batch_size)
                _count_images(batch, statuses, image_root, summary)
            payloads = [note_payload(note_ids[r], titles[r], digests[r]) for r in rows]
            yield [pids[r] for r in rows], vecs, payloads
            summary.embedded += len(rows)
            if on_progress:
                on_progress(summary.embedded, len(pending))

    if getattr(store, "upload_parallel", 1) > 1:  # a server or cluster: parallel bulk upload
        store.upload_stream(batches())  # type: ignore[attr-defined]
    else:
        for ids, vecs, payloads in batches():
            store.upsert(ids, vecs, payloads)

    if prune and gone:
        store.delete(gone)
        summary.pruned = len(gone)
    store.flush()
    if optimize:
        if on_stage:
            on_stage("optimize")
        store.optimize()
    summary.points = store.count()
    summary.seconds = time.perf_counter() - t0
    return summary
