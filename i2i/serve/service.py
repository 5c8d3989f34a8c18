"""The note operations behind the HTTP routes, over one embedder and one store.

`NoteService` owns the store (opened once), the embedder (loaded once) and a
`DynamicBatcher` that embeds concurrent requests in shared forward passes. It knows
nothing of HTTP: it raises `NoteNotFound`, and the batcher's `QueueFull` /
`BatcherClosed` pass through.

Threads: calls into the embedded Qdrant Edge store take microseconds to a millisecond
and run on the event loop thread (no thread hop on the hot path); calls to a Qdrant
server are network round trips and run in worker threads. Embedding runs on the
batcher's thread.

Durability: an upsert returns after Qdrant Edge has written it to its write-ahead log,
so an acknowledged note survives the process being killed (the log is replayed when the
collection opens). `flush()` additionally writes segments to disk; the app calls it on
an interval after writes and on shutdown, which keeps the log short.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
import numpy as np
from PIL import Image

from core.batching import DynamicBatcher
from core.contracts import Embedder, Note
from indexer.content import content_hash
from indexer.job import note_payload
from indexer.store import CollectionMeta, VectorStore, ensure_collection, point_id
from retriever.related import Related, related_to_vector

T = TypeVar("T")


class NoteNotFound(Exception):
    """The note id is not in the collection."""


@dataclass(frozen=True)
class IncomingNote:
    """A note from a request: the note dict (its `image` is always None: no paths), the
    decoded image (None: none given) and the image's raw bytes (for the content hash)."""

    note: Note
    image: Image.Image | None = None
    image_bytes: bytes | None = None

    @property
    def digest(self) -> str:
        return content_hash(self.note, None, image_bytes=self.image_bytes)


class NoteService:
    """Related notes, upserts and deletes against `store` with `embedder`'s model."""

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        max_queue: int = 256,
        inline_store: bool = True,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.model_id = embedder.model_id
        self.inline_store = inline_store
        self.dirty = False  # written since the last flush
        self.batcher: DynamicBatcher[IncomingNote, np.ndarray] = DynamicBatcher(
            self._embed_batch,
            max_batch=max_batch,
            max_wait_s=max_wait_s,
            max_queue=max_queue,
            on_batch=on_batch,
            name="i2i-embed",
        )

    # -- set-up and health -------------------------------------------------------------
    def open_collection(self) -> str:
        """Create the collection for this model if missing; `UserError` if it holds
        another model's vectors. Returns "created" or "opened"."""
        meta = CollectionMeta(model_id=self.model_id, dim=int(self.embedder.dim))
        return ensure_collection(self.store, meta)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): the collection opens and holds this checkpoint's model."""
        details: dict[str, Any] = {"model_id": self.model_id, "collection": self.store.location}
        try:
            meta = self.store.meta()
            details["collection_model_id"] = meta.model_id
            details["points"] = self.store.count()
        except Exception as exc:  # a missing collection, an unreachable server
            details["problem"] = str(exc)
            return False, details
        if meta.model_id != self.model_id or meta.dim != self.embedder.dim:
            details["problem"] = (
                f"the collection holds model {meta.model_id!r} (dim {meta.dim}), "
                f"the checkpoint is {self.model_id!r} (dim {self.embedder.dim})"
            )
            return False, details
        return True, details

    # -- store access ------------------------------------------------------------------
    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        if self.inline_store:
            return fn(*args)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    async def count(self) -> int:
        return await self._store(self.store.count)

    async def flush(self) -> None:
        """Write segments to disk (in a thread: it takes tens of milliseconds)."""
        self.dirty = False
        await anyio.to_thread.run_sync(self.store.flush)

    # -- embedding ---------------------------------------------------------------------
    def _embed_batch(self, items: list[IncomingNote]) -> list[np.ndarray]:
        notes = [i.note for i in items]
        vecs = np.asarray(
            self.embedder.embed(notes, batch_size=len(notes), images=[i.image for i in items]),
            dtype=np.float32,
        )
        if vecs.shape != (len(items), self.embedder.dim) or not np.isfinite(vecs).all():
            raise RuntimeError(f"embedder {self.model_id} returned bad vectors (shape {vecs.shape})")
        return list(vecs)

    async def embed(self, items: Sequence[IncomingNote]) -> np.ndarray:
        """Vectors for `items` through the batcher (`QueueFull` when it is full)."""
        return np.stack(await self.batcher.submit_many(list(items)))

    # -- operations --------------------------------------------------------------------
    async def related_by_id(self, note_id: str, k: int) -> list[Related]:
        """Top-k related to an indexed note (itself excluded); `NoteNotFound` otherwise."""
        pid = point_id(note_id)
        found = await self._store(self.store.retrieve, [pid], True)
        if not found or found[0].vector is None:
            raise NoteNotFound(note_id)
        return await self._store(related_to_vector, self.store, found[0].vector, k, [pid])

    async def related_to_note(self, item: IncomingNote, k: int) -> list[Related]:
        """Top-k related to a note that need not be indexed (embedded now, not stored).
        A note id that is indexed is excluded from its own answer."""
        vector = (await self.embed([item]))[0]
        note_id = item.note.get("note_id")
        exclude = [point_id(note_id)] if note_id else []
        return await self._store(related_to_vector, self.store, vector, k, exclude)

    async def put(self, items: Sequence[IncomingNote]) -> list[str]:
        """Embed and upsert notes; per note "created", "updated" or "unchanged" (same
        content hash under the same model: not embedded again, like `i2i index`).
        The notes are searchable when this returns."""
        pids = [point_id(i.note["note_id"]) for i in items]
        digests = [i.digest for i in items]
        stored = {p.id: p.payload for p in await self._store(self.store.retrieve, pids, False)}
        statuses: list[str] = []
        todo: list[int] = []
        for n, (pid, digest) in enumerate(zip(pids, digests, strict=True)):
            have = stored.get(pid)
            if have is None:
                statuses.append("created")
            elif have.get("content_hash") == digest:  # the collection holds this model only
                statuses.append("unchanged")
                continue
            else:
                statuses.append("updated")
            todo.append(n)
        if todo:
            vecs = await self.embed([items[n] for n in todo])
            payloads = [
                note_payload(items[n].note["note_id"], items[n].note.get("title"), digests[n]) for n in todo
            ]
            await self._store(self.store.upsert, [pids[n] for n in todo], vecs, payloads)
            self.dirty = True
        return statuses

    async def delete(self, note_id: str) -> None:
        """Remove a note; `NoteNotFound` if it is not there."""
        pid = point_id(note_id)
        if not await self._store(self.store.retrieve, [pid], False):
            raise NoteNotFound(note_id)
        await self._store(self.store.delete, [pid])
        self.dirty = True

    # -- shutdown ----------------------------------------------------------------------
    def close(self) -> None:
        """Finish queued embeddings, then flush and close the store."""
        self.batcher.close(drain=True, timeout=60)
        self.store.close()
