"""Pick a store backend from user settings: embedded Qdrant Edge unless a URL is given.

CLI commands build a `StoreSpec` from their options (`--workspace`, `--collection`,
`--qdrant-url` / `I2I_QDRANT_URL`, `--qdrant-api-key` / `I2I_QDRANT_API_KEY`, cluster
settings) and call `open_store`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from indexer.store import HnswParams, VectorStore

DEFAULT_COLLECTION = "notes"
DEFAULT_WORKSPACE = Path(".i2i")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class StoreSpec:
    """Where a collection lives.

    - `url` None: embedded Qdrant Edge at `<workspace>/qdrant/<collection>/`.
    - `url` set: a Qdrant server or cluster (gRPC preferred), `api_key` if it needs one.
    - `local_path` set: qdrant-client's local mode in that folder (tests, no server).
    """

    collection: str = DEFAULT_COLLECTION
    workspace: Path = DEFAULT_WORKSPACE
    url: str | None = None
    api_key: str | None = None
    local_path: Path | None = None
    hnsw: HnswParams = field(default_factory=HnswParams)
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    upload_parallel: int = 1  # server: worker processes for bulk loads (upload_points)

    def edge_path(self) -> Path:
        return Path(self.workspace) / "qdrant" / self.collection


def open_store(spec: StoreSpec) -> VectorStore:
    """The backend `spec` names; the collection itself may not exist yet."""
    if not _NAME.match(spec.collection):
        raise UserError(
            f"bad collection name {spec.collection!r}: use letters, digits, '_', '-', '.' "
            "(at most 128, starting with a letter or digit)"
        )
    if spec.url or spec.local_path:
        from indexer.client import ClientStore, connect

        if spec.url:
            client = connect(spec.url, spec.api_key)
            where = f"collection {spec.collection!r} at {spec.url}"
        else:
            from qdrant_client import QdrantClient

            client = QdrantClient(path=str(spec.local_path))
            where = f"collection {spec.collection!r} in {spec.local_path} (qdrant-client local mode)"
        return ClientStore(
            client,
            spec.collection,
            hnsw=spec.hnsw,
            shard_number=spec.shard_number,
            replication_factor=spec.replication_factor,
            write_consistency_factor=spec.write_consistency_factor,
            location=where,
            upload_parallel=spec.upload_parallel,
        )
    from indexer.edge import EdgeStore

    return EdgeStore(spec.edge_path(), hnsw=spec.hnsw)
