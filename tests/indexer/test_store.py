"""The store interface on both real backends (Qdrant Edge, qdrant-client local mode)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from indexer.backends import StoreSpec, open_store
from indexer.edge import EdgeStore
from indexer.store import CollectionMeta, HnswParams, VectorStore, ensure_collection, point_id


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_point_id_is_a_stable_uuid5() -> None:
    assert point_id("n1") == point_id("n1") != point_id("n2")
    assert uuid.UUID(point_id("n1")).version == 5
    # Pinned: changing the namespace would orphan every existing collection.
    assert point_id("n1") == str(uuid.uuid5(uuid.UUID("6f1c1f0e-3d0a-5b7e-9a51-1a2b3c4d5e6f"), "n1"))


def test_create_upsert_retrieve_query(store: VectorStore) -> None:
    assert not store.exists()
    assert ensure_collection(store, CollectionMeta("m1", 8)) == "created"
    assert store.meta().model_id == "m1" and store.meta().dim == 8
    rng = np.random.default_rng(0)
    vecs = _unit(rng, 40, 8)
    ids = [point_id(f"n{i}") for i in range(40)]
    store.upsert(ids, vecs, [{"note_id": f"n{i}", "title": f"t{i}"} for i in range(40)])
    store.upsert(ids[:5], vecs[:5], [{"note_id": f"n{i}", "title": f"t{i}"} for i in range(5)])  # no dupes
    assert store.count() == 40
    got = store.retrieve([ids[3], point_id("nope")])
    assert [p.id for p in got] == [ids[3]]
    np.testing.assert_allclose(got[0].vector, vecs[3], atol=1e-5)  # Qdrant re-normalises (SIMD)
    hits = store.query(vecs[3], 5, exclude=[ids[3]])
    exact = np.argsort(-(vecs @ vecs[3]))[1:6]
    assert [h.payload["note_id"] for h in hits] == [f"n{i}" for i in exact]
    assert sorted(pid for pid, _ in store.scroll(["note_id"], page=7)) == sorted(ids)
    store.delete(ids[:10])
    assert store.count() == 30


def test_both_backends_answer_alike(tmp_path: Path) -> None:
    """Same points, same queries: Edge and qdrant-client return the same ids and scores."""
    rng = np.random.default_rng(1)
    vecs = _unit(rng, 200, 16)
    ids = [point_id(f"n{i}") for i in range(200)]
    payloads = [{"note_id": f"n{i}", "title": ""} for i in range(200)]
    answers = []
    for spec in (StoreSpec(workspace=tmp_path / "ws"), StoreSpec(local_path=tmp_path / "local")):
        with open_store(spec) as s:
            s.create(CollectionMeta("m", 16))
            s.upsert(ids, vecs, payloads)
            answers.append(s.query_batch(vecs[:20], 7, [[i] for i in ids[:20]]))
    for edge_hits, client_hits in zip(*answers, strict=True):
        assert [h.id for h in edge_hits] == [h.id for h in client_hits]
        np.testing.assert_allclose([h.score for h in edge_hits], [h.score for h in client_hits], atol=1e-5)


def test_refuses_other_model_or_dimension(store: VectorStore) -> None:
    ensure_collection(store, CollectionMeta("model-a", 8))
    assert ensure_collection(store, CollectionMeta("model-a", 8)) == "opened"
    with pytest.raises(UserError, match=r"model 'model-a', not 'model-b'.*--recreate"):
        ensure_collection(store, CollectionMeta("model-b", 8))
    with pytest.raises(UserError, match="dimension 8, not 16"):
        ensure_collection(store, CollectionMeta("model-a", 16))
    store.upsert([point_id("x")], np.ones((1, 8), np.float32), [{"note_id": "x"}])
    assert ensure_collection(store, CollectionMeta("model-b", 16), recreate=True) == "recreated"
    assert store.meta().model_id == "model-b" and store.count() == 0


def test_missing_collection_is_a_clear_error(store: VectorStore) -> None:
    with pytest.raises(UserError, match="i2i index"):
        store.meta()


def test_bad_collection_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="bad collection name"):
        open_store(StoreSpec(collection="../evil", workspace=tmp_path))


def test_edge_second_opener_waits_then_gets_a_clear_error(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path / "c")
    first.create(CollectionMeta("m", 4))
    with pytest.raises(UserError, match=r"stayed open in another process for 0\.3 s"):
        EdgeStore(tmp_path / "c", lock_timeout=0.3).count()
    first.close()
    assert EdgeStore(tmp_path / "c").count() == 0


def test_edge_reopens_after_kill_between_meta_and_shard(tmp_path: Path) -> None:
    """collection.json is written first; a collection without its shard still opens."""
    s = EdgeStore(tmp_path / "c")
    s.create(CollectionMeta("m", 4))
    s.close()
    import shutil

    shutil.rmtree(tmp_path / "c" / "shard")
    with EdgeStore(tmp_path / "c") as again:
        assert again.count() == 0 and again.meta().dim == 4


def test_edge_hnsw_recall_against_exact(tmp_path: Path) -> None:
    """With the HNSW index really built (tiny indexing threshold), ANN ~ exact."""
    rng = np.random.default_rng(2)
    centres = _unit(rng, 30, 32)
    x = centres[rng.integers(0, 30, 3000)] + rng.standard_normal((3000, 32)).astype(np.float32) * 0.1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [point_id(f"n{i}") for i in range(3000)]
    hnsw = HnswParams(m=16, ef_construct=100, ef=64, full_scan_threshold_kb=1, indexing_threshold_kb=10)
    with EdgeStore(tmp_path / "c", hnsw=hnsw) as s:
        s.create(CollectionMeta("m", 32))
        s.upsert(ids, x, [{"note_id": f"n{i}"} for i in range(3000)])
        s.optimize()
        assert s.indexed_vectors() == 3000  # answers come from the graph, not a full scan
        q = np.arange(0, 3000, 30)
        ann = s.query_batch(x[q], 10, [[ids[i]] for i in q])
    scores = x[q] @ x.T
    scores[np.arange(len(q)), q] = -np.inf
    exact = np.argsort(-scores, axis=1)[:, :10]
    recall = np.mean(
        [len({h.id for h in a} & {ids[j] for j in e}) / 10 for a, e in zip(ann, exact, strict=True)]
    )
    assert recall >= 0.95


def test_point_id_is_uuid5_of_the_note_id() -> None:
    import uuid

    from indexer.store import POINT_NAMESPACE, point_id

    for note in ["n0001", "", "é ü 中文 🎉", "a" * 1000, "42", *(f"n{i}" for i in range(500))]:
        assert point_id(note) == str(uuid.uuid5(POINT_NAMESPACE, note))


def test_edge_upsert_takes_any_float_rows(tmp_path: Path) -> None:
    """Rows go to Edge as memoryviews of float32 rows: float64, strided and sliced input
    are converted first; a count mismatch is an error, no ids a no-op."""
    store = EdgeStore(tmp_path / "c")
    store.create(CollectionMeta("m", 8))
    vecs = _unit(np.random.default_rng(3), 40, 8)
    wide = np.asfortranarray(vecs.astype(np.float64))[::2]  # 20 rows, float64, not C-contiguous
    ids = [point_id(f"n{i}") for i in range(20)]
    store.upsert(ids, wide, [{"note_id": f"n{i}"} for i in range(20)])
    got = {p.id: p.vector for p in store.retrieve(ids)}
    np.testing.assert_allclose(np.stack([got[i] for i in ids]), vecs[::2], atol=1e-6)
    with pytest.raises(ValueError, match="3 ids but vectors of shape"):
        store.upsert(ids[:3], vecs[:2], [{}, {}, {}])
    store.upsert([], np.zeros((0, 8), np.float32), [])
    assert store.count() == 20
    store.close()


def test_edge_search_threads_set_at_creation_and_on_reopen(tmp_path: Path) -> None:
    """New shards get one search thread per query; a shard made before `search_threads`
    (no such key in its config: Edge's automatic pool) is switched when reopened, keeping
    its HNSW settings, its points and its answers; 0 asks for the pool again."""
    config = tmp_path / "c" / "shard" / "edge_config.json"
    x = _unit(np.random.default_rng(4), 50, 8)
    ids = [point_id(f"n{i}") for i in range(50)]
    hnsw = HnswParams(m=8, ef_construct=40, full_scan_threshold_kb=5, indexing_threshold_kb=20)
    with EdgeStore(tmp_path / "c", hnsw=hnsw) as old:
        old.create(CollectionMeta("m", 8))
        old.upsert(ids, x, [{"note_id": f"n{i}"} for i in range(50)])
        before = [h.id for h in old.query(x[0], 5)]
    older = json.loads(config.read_text())
    del older["max_search_threads"]  # as the shards written before it
    config.write_text(json.dumps(older))

    with EdgeStore(tmp_path / "c") as reopened:  # default: one thread, HNSW params of its own
        assert reopened.count() == 50
        assert [h.id for h in reopened.query(x[0], 5)] == before
    saved = json.loads(config.read_text())
    assert saved["max_search_threads"] == 1
    assert (saved["hnsw_config"]["m"], saved["hnsw_config"]["ef_construct"]) == (8, 40)
    assert saved["hnsw_config"]["full_scan_threshold"] == 5
    assert saved["optimizers"]["indexing_threshold"] == 20

    with EdgeStore(tmp_path / "c", search_threads=0) as pooled:
        assert [h.id for h in pooled.query(x[0], 5)] == before
    assert json.loads(config.read_text())["max_search_threads"] == 0
