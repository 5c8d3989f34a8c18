"""Sizing a sharded, replicated Qdrant collection for a corpus, and the numbers behind it.

`plan_cluster(points, dim, nodes)` picks the shard count from the corpus size and gives
the memory, disk and build time a deployment should expect:

- shards: at least one per node and a multiple of the node count (so every node holds
  the same share and nodes can be added by moving whole shards), with at most
  `MAX_POINTS_PER_SHARD` points per shard (a shard's HNSW graph is built by one
  optimizer; smaller shards build in parallel and move faster);
- replication 2 by default (a node can fail without losing reads or writes), write
  consistency = replication by default for the bulk load (a write is acknowledged by every
  replica: a finished batch is durable everywhere, so a killed load resumes exactly);
- memory per node: vectors (float32), the HNSW graph (about `2 * m` links of 4 bytes per
  point on level 0, plus upper levels), payload and id tracker, times replication over
  the nodes; with `on_disk` vectors (mmap) the vectors leave RAM and the page cache holds
  what queries touch;
- load time: points / (measured upsert rate per node x nodes), HNSW build time scaled
  from a measured single-shard rate (n log n per shard, shards built in parallel, cores
  per node shared).

The defaults for the measured rates come from `benchmarks/index_query.py` on the 2-core
development machine; pass your own for other hardware.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

MAX_POINTS_PER_SHARD = 5_000_000
GRAPH_BYTES_PER_LINK = 4
PAYLOAD_BYTES = 150  # note_id, title (~70 B), content_hash as stored (JSON, with keys)
ID_TRACKER_BYTES = 40  # external UUID <-> internal id maps and versions


@dataclass(frozen=True)
class ClusterPlan:
    """A collection layout and what it costs (bytes, seconds)."""

    points: int
    dim: int
    nodes: int
    shards: int
    replication: int
    write_consistency: int
    points_per_shard: int
    ram_per_node_bytes: int
    ram_per_node_on_disk_vectors_bytes: int
    disk_per_node_bytes: int
    upload_seconds: float
    hnsw_build_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shard_count(points: int, nodes: int, max_per_shard: int = MAX_POINTS_PER_SHARD) -> int:
    """Shards for `points` on `nodes`: a multiple of `nodes`, at most `max_per_shard` each."""
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    per_node = math.ceil(max(points, 1) / nodes)
    return nodes * max(1, math.ceil(per_node / max_per_shard))


def plan_cluster(
    points: int,
    dim: int,
    nodes: int = 3,
    *,
    replication: int = 2,
    write_consistency: int | None = None,
    m: int = 16,
    upsert_points_per_s_per_node: float = 40_000.0,
    build_seconds_per_million: float = 320.0,
    cores_per_node: int = 8,
    build_cores_measured: int = 2,
) -> ClusterPlan:
    """The layout and costs of `points` x `dim` vectors on `nodes` Qdrant nodes."""
    replication = min(replication, nodes)
    shards = shard_count(points, nodes)
    per_shard = math.ceil(points / shards)
    copies = points * replication / nodes  # points stored per node, replicas included
    vector_bytes = dim * 4
    graph_bytes = 2 * m * GRAPH_BYTES_PER_LINK * 1.2  # level 0 plus ~20% for upper levels
    overhead = PAYLOAD_BYTES + ID_TRACKER_BYTES
    ram = copies * (vector_bytes + graph_bytes + overhead)
    ram_on_disk = copies * (graph_bytes + overhead)
    disk = copies * (vector_bytes + graph_bytes + overhead) * 1.5  # WAL and segment slack
    upload = points * replication / (upsert_points_per_s_per_node * nodes)
    # One shard's graph: scaled n log n from the measured 1M build; a node builds
    # (shards * replication / nodes) shards, as many at once as its cores allow.
    one = build_seconds_per_million * (per_shard / 1e6) * math.log(max(per_shard, 2)) / math.log(1e6)
    shards_per_node = math.ceil(shards * replication / nodes)
    waves = math.ceil(shards_per_node / max(1, cores_per_node // build_cores_measured))
    return ClusterPlan(
        points=points,
        dim=dim,
        nodes=nodes,
        shards=shards,
        replication=replication,
        write_consistency=write_consistency or replication,
        points_per_shard=per_shard,
        ram_per_node_bytes=int(ram),
        ram_per_node_on_disk_vectors_bytes=int(ram_on_disk),
        disk_per_node_bytes=int(disk),
        upload_seconds=upload,
        hnsw_build_seconds=one * waves,
    )
