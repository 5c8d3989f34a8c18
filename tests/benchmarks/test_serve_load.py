"""benchmarks/serve_load.py: the in-process peer it measures the server against."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import serve_load  # noqa: E402  (the script, from benchmarks/)

from indexer.edge import EdgeStore  # noqa: E402
from indexer.store import CollectionMeta, point_id  # noqa: E402


@pytest.mark.parametrize("concurrency", [1, 4])
def test_in_process_peer_answers_every_query_at_its_concurrency(tmp_path: Path, concurrency: int) -> None:
    ids = [f"n{i}" for i in range(300)]
    vectors = serve_load.clustered(len(ids), 16, centres=10)
    with EdgeStore(tmp_path / "qdrant" / "notes") as store:
        store.create(CollectionMeta(model_id="bench", dim=16))
        store.upsert([point_id(t) for t in ids], vectors, [{"note_id": t, "title": t} for t in ids])
        store.flush()
        cell = serve_load.in_process(store, ids, 57, concurrency)
    # Exactly the asked number of queries over all threads, each timed once.
    assert cell.done == 57 and cell.concurrency == concurrency and cell.errors == 0
    assert all(t > 0 for t in cell.latencies) and cell.seconds >= max(cell.latencies)
    row = cell.row()
    assert row["mean_ms"] == pytest.approx(np.mean(cell.latencies) * 1e3)
    assert row["p50_ms"] <= row["p99_ms"] and row["qps"] > 0
