"""The path from vectors to a sharded, replicated collection (qdrant-client local mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient

from core.contracts import notes_to_dicts, read_notes
from indexer.client import ClientStore
from indexer.cluster import MAX_POINTS_PER_SHARD, plan_cluster, shard_count
from indexer.job import index_notes
from indexer.store import CollectionMeta, point_id
from indexer.testing import HashingEmbedder
from indexer.vectors import VectorFiles, embed_to_vectors


def test_shard_count_follows_the_corpus_and_the_nodes() -> None:
    assert shard_count(1_000, 3) == 3  # at least one shard per node
    assert shard_count(100_000_000, 3) == 21  # <= 5M per shard, a multiple of the nodes
    for points, nodes in [(1, 1), (12_345_678, 4), (100_000_000, 6), (10**9, 10)]:
        shards = shard_count(points, nodes)
        assert shards % nodes == 0 and points / shards <= MAX_POINTS_PER_SHARD


def test_plan_for_100m_notes_x_64() -> None:
    plan = plan_cluster(100_000_000, 64, nodes=3)
    assert (plan.shards, plan.replication, plan.write_consistency) == (21, 2, 2)
    gib = 2**30
    # Two copies of 100M x (256 B vector + ~154 B graph + 190 B payload/ids) over 3 nodes.
    assert 30 * gib < plan.ram_per_node_bytes < 45 * gib
    assert (
        plan.ram_per_node_on_disk_vectors_bytes < plan.ram_per_node_bytes - 100_000_000 * 2 / 3 * 256 * 0.99
    )
    assert plan.upload_seconds > 0 and plan.hnsw_build_seconds > 0


def test_create_request_carries_the_cluster_layout(tmp_path: Path) -> None:
    store = ClientStore(
        QdrantClient(path=str(tmp_path / "q")),
        "notes",
        shard_number=21,
        replication_factor=2,
        write_consistency_factor=2,
    )
    params = store.create_params(CollectionMeta(model_id="m", dim=8))
    assert (params["shard_number"], params["replication_factor"], params["write_consistency_factor"]) == (
        21,
        2,
        2,
    )
    assert params["metadata"]["model_id"] == "m" and params["vectors_config"].size == 8


def test_vectors_to_a_collection_with_parallel_uploads(tmp_path: Path, make_notes) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "notes.parquet"
    make_notes(300).write_parquet(path)
    notes = read_notes(path)
    for i in range(3):
        embed_to_vectors(
            notes, HashingEmbedder(), tmp_path / "vectors", image_root=tmp_path, shard=i, shards=3
        )
    store = ClientStore(
        QdrantClient(path=str(tmp_path / "q")),
        "notes",
        shard_number=3,
        replication_factor=2,
        write_consistency_factor=2,
        upload_parallel=2,
    )
    files = VectorFiles(tmp_path / "vectors")
    first = index_notes(path, files, store, batch_size=64)
    assert (first.embedded, first.points) == (300, 300)
    again = index_notes(path, files, store, batch_size=64)
    assert (again.embedded, again.unchanged, again.points) == (0, 300, 300)
    got = {p.id: p.vector for p in store.retrieve([point_id(n) for n in notes["note_id"]])}
    want = HashingEmbedder().embed(notes_to_dicts(notes))
    stored = np.stack([got[point_id(n)] for n in notes["note_id"]])
    np.testing.assert_allclose(stored, want, atol=1e-5)
    store.close()
