"""`ClientStore`: a collection on a Qdrant server or cluster, through `qdrant-client`.

`connect(url, api_key)` talks gRPC when it can (`prefer_grpc=True`: bulk upserts are
several times cheaper than over REST); `QdrantClient(path=...)` (local mode) takes the
same requests in tests. Collection metadata (`CollectionMeta`) is stored as Qdrant's
collection-level `metadata` (server >= 1.16). Cluster settings (`shard_number`,
`replication_factor`, `write_consistency_factor`) apply when the collection is created.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from core.errors import UserError
from indexer.store import CollectionMeta, Hit, HnswParams, StoredPoint, VectorStore


def connect(url: str, api_key: str | None = None, timeout: int = 60) -> QdrantClient:
    """A client for a Qdrant server or cluster at `url`, gRPC preferred."""
    try:
        return QdrantClient(url=url, api_key=api_key or None, prefer_grpc=True, timeout=timeout)
    except Exception as exc:  # malformed URL and the like
        raise UserError(
            f"cannot connect to Qdrant at {url!r}: {exc}; expected e.g. http://localhost:6333"
        ) from None


class ClientStore(VectorStore):
    """One collection reached through a `QdrantClient` (server, cluster or local mode)."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        hnsw: HnswParams | None = None,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        location: str | None = None,
    ) -> None:
        self.client = client
        self.collection = collection
        self.hnsw = hnsw or HnswParams()
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        self.write_consistency_factor = write_consistency_factor
        self.location = location or f"collection {collection!r} (Qdrant server)"

    # -- lifecycle ---------------------------------------------------------------------
    def exists(self) -> bool:
        try:
            return bool(self.client.collection_exists(self.collection))
        except Exception as exc:
            raise UserError(f"cannot reach Qdrant for {self.location}: {exc}") from None

    def meta(self) -> CollectionMeta:
        if not self.exists():
            raise UserError(
                f"{self.location} does not exist; run `i2i index notes.parquet --checkpoint RUN` "
                "first (or check --collection / --qdrant-url)"
            )
        info = self.client.get_collection(self.collection)
        md = getattr(info.config, "metadata", None) or {}  # None before Qdrant 1.16
        if "model_id" not in md or "dim" not in md:
            raise UserError(
                f"{self.location} has no i2i metadata (model_id, dim): it was not created by "
                "`i2i index`, or the server is older than 1.16; use another --collection or --recreate"
            )
        return CollectionMeta.from_dict(md)

    def create(self, meta: CollectionMeta) -> None:
        h = self.hnsw
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=meta.dim, distance=models.Distance.COSINE),
            shard_number=self.shard_number,
            replication_factor=self.replication_factor,
            write_consistency_factor=self.write_consistency_factor,
            hnsw_config=models.HnswConfigDiff(
                m=h.m, ef_construct=h.ef_construct, full_scan_threshold=h.full_scan_threshold_kb
            ),
            optimizers_config=(
                models.OptimizersConfigDiff(indexing_threshold=h.indexing_threshold_kb)
                if h.indexing_threshold_kb is not None
                else None
            ),
            metadata=meta.to_dict(),
        )

    def drop(self) -> None:
        self.client.delete_collection(self.collection)

    # -- data --------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        if not len(ids):
            return
        self.client.upsert(
            self.collection,
            points=models.Batch(
                ids=list(ids),
                vectors=np.asarray(vectors, dtype=np.float32).tolist(),
                payloads=list(payloads),
            ),
            wait=True,  # a finished batch is durable before the next one starts (resume)
        )

    def retrieve(self, ids: Sequence[str], with_vectors: bool = True) -> list[StoredPoint]:
        if not ids:
            return []
        records = self.client.retrieve(
            self.collection, list(ids), with_payload=True, with_vectors=with_vectors
        )
        return [
            StoredPoint(
                str(r.id),
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
        params = models.SearchParams(hnsw_ef=max(self.hnsw.ef, k), exact=exact)
        requests = []
        for i, row in enumerate(vectors.tolist()):
            skip = list(exclude[i]) if exclude is not None else []
            flt = models.Filter(must_not=[models.HasIdCondition(has_id=skip)]) if skip else None
            requests.append(
                models.QueryRequest(
                    query=row,
                    filter=flt,
                    params=params,
                    limit=k,
                    with_payload=["note_id", "title"],
                    with_vector=False,
                )
            )
        if not requests:
            return []
        with warnings.catch_warnings():
            # Local mode (tests) warns that it ignores hnsw_ef; a server uses it.
            warnings.filterwarnings("ignore", message="Local mode performs exact")
            responses = self.client.query_batch_points(self.collection, requests)
        return [[Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in r.points] for r in responses]

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def scroll(self, fields: Sequence[str], page: int = 4096) -> Iterator[tuple[str, dict[str, Any]]]:
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection, limit=page, offset=offset, with_payload=list(fields), with_vectors=False
            )
            for r in records:
                yield str(r.id), dict(r.payload or {})
            if offset is None:
                return

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True
            )

    # -- maintenance -------------------------------------------------------------------
    def optimize(self, timeout_s: float = 1800.0) -> None:
        """A server builds HNSW in the background after a bulk load: wait until green."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.client.get_collection(self.collection).status
            if status == models.CollectionStatus.GREEN:
                return
            time.sleep(1.0)

    def flush(self) -> None:
        """Upserts use wait=True: nothing is pending client-side."""

    def close(self) -> None:
        self.client.close()
