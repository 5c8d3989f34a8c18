"""`EdgeStore`: a collection in Qdrant Edge (the Qdrant engine in-process, on disk).

Layout of one collection directory:

    <dir>/collection.json   CollectionMeta (Edge has no collection metadata), atomic writes
    <dir>/shard/            the Edge shard (segments + WAL)

`collection.json` is written before the shard is created, so a run killed in between
leaves a collection that opens (and gets its shard created) on the next run. One process
at a time may open a shard (its WAL is locked); a second gets a clear error.
"""

from __future__ import annotations

import json
import shutil
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


def _sid(point: Any) -> str:
    # Edge returns uuid.UUID for UUID ids; callers always see strings.
    return str(point)


class EdgeStore(VectorStore):
    """A Qdrant Edge collection under `path` (see module docstring)."""

    def __init__(self, path: str | Path, hnsw: HnswParams | None = None) -> None:
        self.path = Path(path)
        self.hnsw = hnsw or HnswParams()
        self.location = f"{self.path} (embedded Qdrant Edge)"
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

    def create(self, meta: CollectionMeta) -> None:
        if (self.path / SHARD_DIR).exists():
            raise UserError(f"{self.path / SHARD_DIR} already holds a shard; drop it first (--recreate)")
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / META_FILE, meta.to_dict())
        self._open(meta)

    def drop(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def _config(self, dim: int) -> qe.EdgeConfig:
        h = self.hnsw
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
        )

    def _open(self, meta: CollectionMeta | None = None) -> qe.EdgeShard:
        if self._shard is not None:
            return self._shard
        meta = meta or self.meta()
        shard_dir = self.path / SHARD_DIR
        try:
            if (shard_dir / "edge_config.json").exists():
                self._shard = qe.EdgeShard.load(str(shard_dir))
            else:
                # Metadata written, shard never created (killed in between) or brand new.
                shutil.rmtree(shard_dir, ignore_errors=True)
                self._shard = qe.EdgeShard.create(str(shard_dir), self._config(meta.dim))
        except Exception as exc:
            if "WAL" in str(exc) or "WouldBlock" in str(exc):
                raise UserError(
                    f"collection {self.path} is open in another process (an embedded Qdrant Edge "
                    "collection allows one process at a time); wait for it to finish, or serve the "
                    "collection from a Qdrant server (--qdrant-url)"
                ) from None
            raise
        return self._shard

    @property
    def shard(self) -> qe.EdgeShard:
        return self._open()

    # -- data --------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        rows = np.asarray(vectors, dtype=np.float32).tolist()
        points = [qe.Point(i, v, p) for i, v, p in zip(ids, rows, payloads, strict=True)]
        if points:
            self.shard.update(qe.UpdateOperation.upsert_points(points))

    def retrieve(self, ids: Sequence[str], with_vectors: bool = True) -> list[StoredPoint]:
        if not ids:
            return []
        records = self.shard.retrieve(list(ids), with_payload=True, with_vector=with_vectors)
        return [
            StoredPoint(
                _sid(r.id),
                np.asarray(r.vector, dtype=np.float32) if with_vectors else None,
                dict(r.payload or {}),
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
                    with_payload=["note_id", "title"],
                    with_vector=False,
                )
            )
        if not requests:
            return []
        results = self.shard.query_batch(qe.QueryBatchRequest(requests))
        return [[Hit(_sid(p.id), float(p.score), dict(p.payload or {})) for p in res] for res in results]

    def count(self) -> int:
        return int(self.shard.count(qe.CountRequest(exact=True)))

    def scroll(self, fields: Sequence[str], page: int = 4096) -> Iterator[tuple[str, dict[str, Any]]]:
        offset = None
        while True:
            records, offset = self.shard.scroll(
                qe.ScrollRequest(offset=offset, limit=page, with_payload=list(fields), with_vector=False)
            )
            for r in records:
                yield _sid(r.id), dict(r.payload or {})
            if offset is None:
                return

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.shard.update(qe.UpdateOperation.delete_points(list(ids)))

    # -- maintenance -------------------------------------------------------------------
    def optimize(self) -> None:
        self.shard.optimize()

    def indexed_vectors(self) -> int:
        """How many vectors sit in HNSW-indexed segments (0: brute force only)."""
        return int(self.shard.info().indexed_vectors_count)

    def flush(self) -> None:
        if self._shard is not None:
            self._shard.flush()

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
