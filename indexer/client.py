"""`ClientStore`: a collection on a Qdrant server or cluster, through `qdrant-client`.

`connect(url, api_key)` talks gRPC (`prefer_grpc=True`: bulk upserts are several times
cheaper than over REST), on 6334 or on the port `--qdrant-url` names (see `Endpoint`);
a server it cannot reach is one line naming the host and the port actually tried.
`QdrantClient(path=...)` (local mode) takes the same requests in tests. Collection
metadata (`CollectionMeta`) is stored as Qdrant's collection-level `metadata` (server
>= 1.16). Cluster settings (`shard_number`,
`replication_factor`, `write_consistency_factor`) apply when the collection is created.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from qdrant_client import QdrantClient, models

from core.errors import UserError
from indexer.store import CollectionMeta, Hit, HnswParams, StoredPoint, VectorStore

DEFAULT_REST_PORT = 6333
DEFAULT_GRPC_PORT = 6334


@dataclass(frozen=True)
class Endpoint:
    """Where a `--qdrant-url` points: the gRPC port is the one used.

    `http(s)://HOST[:PORT]`: REST on PORT (default 6333), gRPC on 6334, unless PORT is
    6334, which is taken as the gRPC port. `grpc(s)://HOST:PORT`: gRPC on PORT.
    """

    url: str
    host: str
    https: bool
    rest_port: int
    grpc_port: int
    prefix: str | None = None

    def describe(self) -> str:
        return f"{self.host}:{self.grpc_port} (gRPC, from --qdrant-url {self.url})"


def parse_url(url: str) -> Endpoint:
    """Parse a `--qdrant-url` (see `Endpoint`); a malformed one is a `UserError`."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname or port == -1:
        raise UserError(
            f"--qdrant-url {url!r} is not a Qdrant address; expected e.g. http://localhost:6333 "
            "(REST; gRPC on 6334 is used) or grpc://localhost:6334"
        )
    grpc_given = scheme.startswith("grpc") or port == DEFAULT_GRPC_PORT
    return Endpoint(
        url=url,
        host=parts.hostname,
        https=scheme in ("https", "grpcs"),
        rest_port=DEFAULT_REST_PORT if grpc_given or port is None else port,
        grpc_port=(port or DEFAULT_GRPC_PORT) if grpc_given else DEFAULT_GRPC_PORT,
        prefix=parts.path.strip("/") or None,
    )


def unreachable(exc: Exception, where: str) -> UserError:
    """One line for a failed request: where it went and the transport's own reason."""
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    reason = (text or type(exc).__name__).strip().splitlines()[0].split(": ")[-1]
    code = getattr(exc, "code", None)
    status = f" ({code().name})" if callable(code) and getattr(code(), "name", None) else ""
    return UserError(
        f"cannot reach Qdrant at {where}: {reason}{status}; start the server or fix --qdrant-url "
        "(it also takes a gRPC port: http://HOST:6334)"
    )


def connect(url: str, api_key: str | None = None, timeout: int = 60) -> QdrantClient:
    """A client for a Qdrant server or cluster at `url` (see `Endpoint`), over gRPC."""
    end = parse_url(url)
    try:
        client = QdrantClient(
            host=end.host,
            port=end.rest_port,
            grpc_port=end.grpc_port,
            https=end.https,
            prefix=end.prefix,
            api_key=api_key or None,
            prefer_grpc=True,
            timeout=timeout,
            check_compatibility=False,  # a REST call before any gRPC one; errors surface on use
        )
    except Exception as exc:  # malformed settings and the like
        raise UserError(f"cannot connect to Qdrant at {end.describe()}: {exc}") from None
    client.i2i_endpoint = end.describe()  # type: ignore[attr-defined]  # for error messages
    return client


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
        upload_parallel: int = 1,
    ) -> None:
        self.client = client
        self.collection = collection
        self.hnsw = hnsw or HnswParams()
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        self.write_consistency_factor = write_consistency_factor
        self.location = location or f"collection {collection!r} (Qdrant server)"
        self.upload_parallel = upload_parallel

    # -- lifecycle ---------------------------------------------------------------------
    def exists(self) -> bool:
        try:
            return bool(self.client.collection_exists(self.collection))
        except Exception as exc:
            where = getattr(self.client, "i2i_endpoint", self.location)
            raise unreachable(exc, where) from None

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

    def create_params(self, meta: CollectionMeta) -> dict[str, Any]:
        """The `create_collection` request for `meta`: vectors, cluster layout, HNSW, metadata."""
        h = self.hnsw
        return dict(
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

    def create(self, meta: CollectionMeta) -> None:
        self.client.create_collection(self.collection, **self.create_params(meta))

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

    def upload_stream(
        self,
        batches: Iterable[tuple[Sequence[str], np.ndarray, Sequence[dict[str, Any]]]],
        batch_size: int = 1024,
    ) -> None:
        """Bulk load: every batch through one `upload_points` call with `upload_parallel`
        worker processes (each sends `batch_size` points per request, waiting for the
        write to be acknowledged by the write-consistency quorum). Re-running a killed load
        is safe: point ids are deterministic and upserts idempotent."""

        def points() -> Iterator[models.PointStruct]:
            for ids, vectors, payloads in batches:
                rows = np.asarray(vectors, dtype=np.float32).tolist()
                for i, v, p in zip(ids, rows, payloads, strict=True):
                    yield models.PointStruct(id=i, vector=v, payload=p)

        self.client.upload_points(
            self.collection,
            points(),
            batch_size=batch_size,
            parallel=self.upload_parallel,
            max_retries=3,
            wait=True,
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
            skip: list[models.ExtendedPointId] = list(exclude[i]) if exclude is not None else []
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
