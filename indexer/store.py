"""One small vector-store interface, two real Qdrant backends.

- `EdgeStore` (default): Qdrant Edge, the Qdrant engine in-process, on disk under the
  workspace (`<workspace>/qdrant/<collection>/`). No server to start.
- `ClientStore`: `qdrant-client` against a Qdrant server or cluster (`--qdrant-url`,
  gRPC preferred), or against qdrant-client's local mode (`path=`) in tests.

Both behave the same: a note's point id is a UUID5 of its `note_id` (re-indexing
overwrites, never duplicates); the payload keeps `note_id`, `title` and `content_hash`
(Edge stores the three packed in one string and unpacks them on every read: `indexer.edge`);
distance is cosine; the collection records which model (checkpoint) and dimension it
holds (`CollectionMeta`), so vectors of two models never mix. (Collections written by
earlier versions also carry `model_id` in every payload; it is read past, never needed.)
"""

from __future__ import annotations

import hashlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import numpy as np

from core.errors import UserError

# Fixed namespace: the same note_id maps to the same point id in every collection,
# on every machine, for every version of i2i. Never change it (it would orphan every
# existing point).


def _package_version() -> str:
    """The installed i2i distribution's version (read from its metadata, not the CLI)."""
    try:
        return version("i2i")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


POINT_NAMESPACE = uuid.UUID("6f1c1f0e-3d0a-5b7e-9a51-1a2b3c4d5e6f")

DISTANCE = "cosine"
PAYLOAD_FIELDS = ("note_id", "title", "content_hash")


_NAMESPACE_BYTES = POINT_NAMESPACE.bytes


def point_id(note_id: str) -> str:
    """Deterministic Qdrant point id (UUID5 string) for a note id.

    Exactly `str(uuid.uuid5(POINT_NAMESPACE, note_id))`, computed with hashlib on hex text
    directly (about 4x faster: it runs once per note on every index run): the version
    digit is 5, the variant digit keeps the hash's low two bits under 0b10.
    """
    x = hashlib.sha1(_NAMESPACE_BYTES + str(note_id).encode()).hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


_VARIANT = {c: "89ab"[int(c, 16) & 0x3] for c in "0123456789abcdef"}  # RFC 4122 variant digit


@dataclass(frozen=True)
class CollectionMeta:
    """What a collection holds: vectors of one model, of one dimension, cosine distance."""

    model_id: str
    dim: int
    distance: str = DISTANCE
    created_by: str = field(default_factory=lambda: f"i2i {_package_version()}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CollectionMeta:
        return cls(
            model_id=str(d["model_id"]),
            dim=int(d["dim"]),
            distance=str(d.get("distance", DISTANCE)),
            created_by=str(d.get("created_by", "unknown")),
        )


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph settings. Defaults reach recall@10 >= 0.95 on clustered 64-d vectors
    at 1M points (see benchmarks/index_query.py); `ef` is the search-time beam."""

    m: int = 16
    ef_construct: int = 100
    ef: int = 128
    # Segments smaller than this (KB of vectors) stay brute force: exact and fast enough.
    full_scan_threshold_kb: int = 10_000
    # Segments grow an HNSW index past this size (KB); None keeps Qdrant's default.
    indexing_threshold_kb: int | None = None


@dataclass(frozen=True)
class Hit:
    """One query result."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredPoint:
    """One stored point as retrieved by id."""

    id: str
    vector: np.ndarray | None
    payload: dict[str, Any]


StoreT = TypeVar("StoreT", bound="VectorStore")


class VectorStore(ABC):
    """A single Qdrant collection of note vectors.

    Lifecycle: `exists()`, `create(meta)`, `drop()`, `meta()`; data: `upsert`, `retrieve`,
    `query`, `query_batch`, `count`, `scroll`, `delete`; maintenance: `optimize`, `flush`,
    `close`. Usable as a context manager (closes on exit).
    """

    #: Where the collection lives, for messages ("edge:/path" or "http://host:6334/name").
    location: str

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def create(self, meta: CollectionMeta) -> None: ...

    @abstractmethod
    def drop(self) -> None: ...

    @abstractmethod
    def meta(self) -> CollectionMeta:
        """The collection's recorded metadata; `UserError` if the collection is missing."""

    @abstractmethod
    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None: ...

    @abstractmethod
    def retrieve(self, ids: Sequence[str], with_vectors: bool = True) -> list[StoredPoint]:
        """Points that exist among `ids` (missing ids are simply absent), any order."""

    @abstractmethod
    def query_batch(
        self,
        vectors: np.ndarray,
        k: int,
        exclude: Sequence[Sequence[str]] | None = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Top-k by cosine for each row of `vectors`, skipping the ids in `exclude[i]`."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def scroll(self, fields: Sequence[str], page: int = 4096) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every point as (id, payload restricted to `fields`)."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def optimize(self) -> None:
        """Build the ANN index after a bulk load (blocking where the backend allows)."""

    @abstractmethod
    def flush(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def query(
        self, vector: np.ndarray, k: int, exclude: Sequence[str] = (), exact: bool = False
    ) -> list[Hit]:
        """Top-k for one vector, skipping `exclude`."""
        return self.query_batch(np.asarray(vector, np.float32)[None, :], k, [list(exclude)], exact=exact)[0]

    def __enter__(self: StoreT) -> StoreT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ensure_collection(store: VectorStore, meta: CollectionMeta, recreate: bool = False) -> str:
    """Create the collection, or check an existing one holds vectors of `meta`'s model.

    Returns "created", "recreated" or "opened". An existing collection of another model
    or dimension is refused (its vectors would be incomparable with the new ones) unless
    `recreate`, which drops it first.
    """
    if store.exists():
        if recreate:
            store.drop()
            store.create(meta)
            return "recreated"
        check_compatible(store.meta(), meta, store.location)
        return "opened"
    store.create(meta)
    return "created"


def check_compatible(have: CollectionMeta, want: CollectionMeta, location: str) -> None:
    """`UserError` unless `have` (the collection) and `want` (the model) agree."""
    problems = []
    if have.model_id != want.model_id:
        problems.append(f"model {have.model_id!r}, not {want.model_id!r}")
    if have.dim != want.dim:
        problems.append(f"dimension {have.dim}, not {want.dim}")
    if have.distance != want.distance:
        problems.append(f"distance {have.distance}, not {want.distance}")
    if problems:
        raise UserError(
            f"collection {location} holds embeddings of {'; '.join(problems)}; refusing to mix "
            "vectors of two models. Pass --recreate to replace it, or --collection NAME to "
            "write to another collection"
        )
