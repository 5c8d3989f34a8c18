"""`EdgeStore`: a collection in Qdrant Edge (the Qdrant engine in-process, on disk).

Layout of one collection directory:

    <dir>/collection.json   CollectionMeta (Edge has no collection metadata), atomic writes
    <dir>/shard/            the Edge shard (segments + WAL)

`collection.json` is written before the shard is created, so a run killed in between
leaves a collection that opens (and gets its shard created) on the next run.

Qdrant Edge lets one process at a time open a shard (it locks the WAL) and has no
read-only mode: even a query opens the segments for writing. So:

- a second process waits for the lock, up to `lock_timeout` seconds (default 30, env
  `I2I_LOCK_TIMEOUT`), then fails with one line. Short commands such as `i2i related`
  (~0.1 s of store time each) therefore all succeed when many run at once, one after
  the other; many concurrent readers are a job for a Qdrant server (`--qdrant-url`).
- a shard on a read-only folder (a read-only mount, a folder without write
  permission) is copied to a private temporary folder and queried there; the store is
  then read-only (writes raise `UserError`), and the copy is removed on close.

The payload i2i writes (`note_id`, `title`, `content_hash`) is stored packed into one
string field, `PACKED_FIELD` (see `pack_payload`). The binding converts each payload
value by trying bool, then number, then str, raising and dropping a Python exception
at each miss, so every string value costs about 2.8 us of CPU to convert: three of
them took more CPU than the vector and the upsert together (12 against 8 us per point
at 64 dimensions). Packed, a point pays for one. The shard is i2i's private storage (no
server reads it), and every read here unpacks, so callers see the same three fields as
from a Qdrant server. Points written before the packing keep their separate fields and
read as they did; any other payload is stored as given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from core.errors import UserError
from core.io import write_json_atomic
from indexer.store import CollectionMeta, Hit, HnswParams, StoredPoint, VectorStore

META_FILE = "collection.json"
SHARD_DIR = "shard"
DEFAULT_LOCK_TIMEOUT = 30.0
# Threads one query may use. Edge's own default is a pool of 8 "edge-search" threads,
# which on 2 cores spends 2.2x the CPU of one thread per query (400 against 180 us on
# 100k x 64) and answers no sooner; a server answering many queries at once wants each
# on one core. 0 is Edge's automatic pool. Stored in the shard's config.
SEARCH_THREADS = 1
HIT_FIELDS = ("note_id", "title")  # the payload a query returns with each hit


def _locked(exc: Exception) -> bool:
    return "WAL" in str(exc) or "WouldBlock" in str(exc)


def _writable(folder: Path) -> bool:
    """Whether files in `folder` can be opened for writing (a read-only mount counts)."""
    return os.access(folder, os.W_OK | os.X_OK)


def _lock_timeout() -> float:
    try:
        return float(os.environ.get("I2I_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))
    except ValueError:
        raise UserError(
            f"I2I_LOCK_TIMEOUT={os.environ['I2I_LOCK_TIMEOUT']!r} is not a number of seconds"
        ) from None


PACKED_FIELD = "i2i"
_PACKED_KEYS = frozenset(("note_id", "title", "content_hash"))


def pack_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """`{"i2i": "<len>:<content_hash><len>:<note_id><title>"}` for an i2i payload (the
    three fields, all strings); any other payload unchanged. Lengths are in characters,
    so any text round-trips; the hash comes first because a re-index scrolls for it alone."""
    if payload.keys() != _PACKED_KEYS:
        return payload
    note_id, digest, title = payload["note_id"], payload["content_hash"], payload["title"]
    if type(note_id) is not str or type(digest) is not str or type(title) is not str:
        return payload
    return {PACKED_FIELD: f"{len(digest)}:{digest}{len(note_id)}:{note_id}{title}"}


def _digest_of(packed: str) -> str:
    """The `content_hash` of a packed string."""
    colon = packed.index(":")
    return packed[colon + 1 : colon + 1 + int(packed[:colon])]


def _unpack(packed: str) -> tuple[str, str, str]:
    """`(note_id, content_hash, title)` of a packed string."""
    colon = packed.index(":")
    end = colon + 1 + int(packed[:colon])
    digest = packed[colon + 1 : end]
    colon = packed.index(":", end)
    start = colon + 1
    end = start + int(packed[end:colon])
    return packed[start:end], digest, packed[end:]


def unpack_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of a stored payload: `pack_payload` undone; an unpacked one as is."""
    payload = dict(payload or {})
    packed = payload.pop(PACKED_FIELD, None)
    if packed is None:
        return payload
    note_id, digest, title = _unpack(packed)
    payload.update(note_id=note_id, content_hash=digest, title=title)
    return payload


def _with_fields(fields: Sequence[str]) -> list[str]:
    """The stored fields to ask Edge for: the packed field whenever a packed one is wanted."""
    return [PACKED_FIELD, *fields] if _PACKED_KEYS.intersection(fields) else list(fields)


def _fields(payload: dict[str, Any] | None, fields: Sequence[str]) -> dict[str, Any]:
    """`fields` of a payload Edge returned for `_with_fields(fields)` (once per point of
    every scroll; a re-index asks for the hash alone, sliced without unpacking the rest)."""
    packed = payload.get(PACKED_FIELD) if payload else None
    if packed is None:
        return payload or {}  # Edge returned the requested fields only
    if len(fields) == 1 and fields[0] == "content_hash":
        return {"content_hash": _digest_of(packed)}
    unpacked = unpack_payload(payload)
    return {f: unpacked[f] for f in fields if f in unpacked}


def _hit_fields(payload: dict[str, Any] | None) -> dict[str, Any]:
    """`_fields(payload, HIT_FIELDS)`, for the ten or so hits of every query."""
    packed = payload.get(PACKED_FIELD) if payload else None
    if packed is None:
        return payload or {}
    note_id, _, title = _unpack(packed)
    return {"note_id": note_id, "title": title}


def _sid(point: Any) -> str:
    # Edge returns uuid.UUID for UUID ids; callers always see strings.
    return str(point)


class EdgeStore(VectorStore):
    """A Qdrant Edge collection under `path` (see module docstring)."""

    def __init__(
        self,
        path: str | Path,
        hnsw: HnswParams | None = None,
        lock_timeout: float | None = None,
        search_threads: int = SEARCH_THREADS,
    ) -> None:
        self.path = Path(path)
        self.hnsw = hnsw or HnswParams()
        self.search_threads = search_threads
        self.location = f"{self.path} (embedded Qdrant Edge)"
        self.lock_timeout = _lock_timeout() if lock_timeout is None else lock_timeout
        self.read_only = False  # set when a read-only folder is queried through a private copy
        self._copy: Path | None = None
        self._shard: qe.EdgeShard | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / META_FILE).exists()

    def meta(self) -> CollectionMeta:
        f = self.path / META_FILE
        if not f.exists():
            raise UserError(
                f"no collection at {self.path}; run `i2i index notes.parquet --checkpoint RUN` first "
                "(or check --workspace / --collection)"
            )
        try:
            return CollectionMeta.from_dict(json.loads(f.read_text()))
        except (ValueError, KeyError) as exc:
            raise UserError(
                f"collection metadata {f} is unreadable ({exc}); re-create with --recreate"
            ) from None

    def _refuse_write(self) -> None:
        if self.read_only or (self.path.exists() and not _writable(self.path)):
            raise UserError(f"{self.path} is read-only; it can be queried but not changed")

    def create(self, meta: CollectionMeta) -> None:
        self._refuse_write()
        if (self.path / SHARD_DIR).exists():
            raise UserError(f"{self.path / SHARD_DIR} already holds a shard; drop it first (--recreate)")
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / META_FILE, meta.to_dict())
        self._open(meta)

    def drop(self) -> None:
        self._refuse_write()
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def _config(self, dim: int, hnsw: HnswParams | None = None) -> qe.EdgeConfig:
        h = hnsw or self.hnsw
        optimizers = (
            qe.EdgeOptimizersConfig(indexing_threshold=h.indexing_threshold_kb)
            if h.indexing_threshold_kb is not None
            else None
        )
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(
                m=h.m, ef_construct=h.ef_construct, full_scan_threshold=h.full_scan_threshold_kb
            ),
            optimizers=optimizers,
            max_search_threads=self.search_threads,
        )

    def _load(self, shard_dir: Path) -> qe.EdgeShard:
        """Load an existing shard with this store's `search_threads`, keeping the HNSW
        and optimizer settings it was created with (Edge rewrites its config file when
        given one: a shard made before `search_threads`, or last opened with another value)."""
        on_disk = json.loads((shard_dir / "edge_config.json").read_text())
        if on_disk.get("max_search_threads") == self.search_threads:
            return qe.EdgeShard.load(str(shard_dir))
        hnsw, optimizers = on_disk["hnsw_config"], on_disk.get("optimizers") or {}
        created = HnswParams(
            m=hnsw["m"],
            ef_construct=hnsw["ef_construct"],
            full_scan_threshold_kb=hnsw["full_scan_threshold"],
            indexing_threshold_kb=optimizers.get("indexing_threshold"),
        )
        dim = on_disk["vectors"][""]["size"]
        return qe.EdgeShard.load(str(shard_dir), self._config(dim, created))

    def _open(self, meta: CollectionMeta | None = None) -> qe.EdgeShard:
        if self._shard is not None:
            return self._shard
        meta = meta or self.meta()
        shard_dir = self.path / SHARD_DIR
        if (shard_dir / "edge_config.json").exists() and not _writable(shard_dir):
            self._shard = self._open_private_copy(shard_dir)
            return self._shard
        deadline = time.monotonic() + self.lock_timeout
        wait = 0.02
        while True:
            try:
                if (shard_dir / "edge_config.json").exists():
                    self._shard = self._load(shard_dir)
                else:
                    # Metadata written, shard never created (killed in between) or brand new.
                    shutil.rmtree(shard_dir, ignore_errors=True)
                    self._shard = qe.EdgeShard.create(str(shard_dir), self._config(meta.dim))
                return self._shard
            except Exception as exc:
                if not _locked(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise UserError(
                        f"collection {self.path} stayed open in another process for "
                        f"{self.lock_timeout:g} s (an embedded Qdrant Edge collection allows one "
                        "process at a time); wait for it to finish, raise I2I_LOCK_TIMEOUT, or serve "
                        "the collection from a Qdrant server (--qdrant-url)"
                    ) from None
                time.sleep(wait)
                wait = min(wait * 1.5, 0.25)

    def _open_private_copy(self, shard_dir: Path) -> qe.EdgeShard:
        """Load a copy of a read-only shard from a temporary folder (Edge opens segments
        for writing, even to query them)."""
        self._copy = Path(tempfile.mkdtemp(prefix="i2i-edge-read-only-"))
        try:
            shutil.copytree(shard_dir, self._copy / SHARD_DIR)
            shard = self._load(self._copy / SHARD_DIR)
        except Exception:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None
            raise
        self.read_only = True
        return shard

    @property
    def shard(self) -> qe.EdgeShard:
        return self._open()

    # -- data --------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        self._refuse_write()
        if not len(ids):
            return
        # A memoryview of each float32 row: Edge reads its items as it would a list's, without
        # the list of Python floats that `.tolist()` builds first (2.3 vs 5.1 us per 64-d point).
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        if rows.ndim != 2 or len(rows) != len(ids):
            raise ValueError(f"{len(ids)} ids but vectors of shape {rows.shape}")
        points = [
            qe.Point(i, memoryview(v), pack_payload(p))  # type: ignore[arg-type]  # the stub lists lists only
            for i, v, p in zip(ids, rows, payloads, strict=True)
        ]
        self.shard.update(qe.UpdateOperation.upsert_points(points))

    def retrieve(self, ids: Sequence[str], with_vectors: bool = True) -> list[StoredPoint]:
        if not ids:
            return []
        records = self.shard.retrieve(list(ids), with_payload=True, with_vector=with_vectors)
        return [
            StoredPoint(
                _sid(r.id),
                np.asarray(r.vector, dtype=np.float32) if with_vectors else None,
                unpack_payload(r.payload),
            )
            for r in records
        ]

    def query_batch(
        self,
        vectors: np.ndarray,
        k: int,
        exclude: Sequence[Sequence[str]] | None = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        vectors = np.asarray(vectors, dtype=np.float32)
        params = qe.SearchParams(hnsw_ef=max(self.hnsw.ef, k), exact=exact)
        requests = []
        for i, row in enumerate(vectors.tolist()):
            skip = exclude[i] if exclude is not None else ()
            flt = qe.Filter(must_not=[qe.HasIdCondition(set(skip))]) if skip else None
            requests.append(
                qe.QueryRequest(
                    limit=k,
                    query=qe.Query.Nearest(row),
                    filter=flt,
                    params=params,
                    with_payload=_with_fields(HIT_FIELDS),
                    with_vector=False,
                )
            )
        if not requests:
            return []
        results = self.shard.query_batch(qe.QueryBatchRequest(requests))
        return [[Hit(_sid(p.id), float(p.score), _hit_fields(p.payload)) for p in res] for res in results]

    def count(self) -> int:
        return int(self.shard.count(qe.CountRequest(exact=True)))

    def scroll(self, fields: Sequence[str], page: int = 4096) -> Iterator[tuple[str, dict[str, Any]]]:
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=page, with_payload=_with_fields(fields), with_vector=False
            )
            records, offset = self.shard.scroll(request)
            for r in records:
                yield _sid(r.id), _fields(r.payload, fields)
            if offset is None:
                return

    def delete(self, ids: Sequence[str]) -> None:
        self._refuse_write()
        if ids:
            self.shard.update(qe.UpdateOperation.delete_points(list(ids)))

    # -- maintenance -------------------------------------------------------------------
    def optimize(self) -> None:
        self._refuse_write()
        self.shard.optimize()

    def indexed_vectors(self) -> int:
        """How many vectors sit in HNSW-indexed segments (0: brute force only)."""
        return int(self.shard.info().indexed_vectors_count)

    def flush(self) -> None:
        if self._shard is not None:
            self._shard.flush()

    def close(self) -> None:
        if self._shard is not None:
            if not self.read_only:
                self._shard.flush()
            self._shard.close()
            self._shard = None
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None
