"""`related` on both real backends: self-exclusion, order, k, unknown ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from indexer.backends import StoreSpec, open_store
from indexer.store import CollectionMeta, point_id
from retriever.related import MAX_DROPPED, related, related_to_vector


@pytest.mark.parametrize("backend", ["edge", "client-local"])
def test_related_excludes_the_note_and_ranks_by_cosine(backend: str, tmp_path: Path) -> None:
    spec = StoreSpec(workspace=tmp_path) if backend == "edge" else StoreSpec(local_path=tmp_path / "q")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    x[1] = x[0] * 3.0  # n1 points exactly where n0 does: cosine 1, its top answer
    ids = [f"n{i}" for i in range(50)]
    with open_store(spec) as store:
        store.create(CollectionMeta("m", 8))
        store.upsert([point_id(i) for i in ids], x, [{"note_id": i, "title": f"title {i}"} for i in ids])
        top = related(store, "n0", k=6)
        assert [r.rank for r in top] == [1, 2, 3, 4, 5, 6]
        assert "n0" not in [r.note_id for r in top]
        assert (top[0].note_id, top[0].title) == ("n1", "title n1")
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        cos = unit[1:] @ unit[0]
        expected = [ids[1 + j] for j in np.argsort(-cos)[:6]]
        assert [r.note_id for r in top] == expected
        np.testing.assert_allclose([r.score for r in top], np.sort(cos)[::-1][:6], atol=1e-5)
        assert len(related(store, "n3", k=100)) == 49  # everything but the note itself
        with pytest.raises(UserError, match="'nope' is not in"):
            related(store, "nope")
        with pytest.raises(UserError, match="-k must be at least 1"):
            related(store, "n0", k=0)


@pytest.mark.parametrize("backend", ["edge", "client-local"])
def test_excluded_ids_dropped_or_filtered_give_the_same_answer(backend: str, tmp_path: Path) -> None:
    """A few excluded ids are dropped from a longer list; many go to the store as a
    filter. Both give the exact top k of the rest."""
    spec = StoreSpec(workspace=tmp_path) if backend == "edge" else StoreSpec(local_path=tmp_path / "q")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    ids = [f"n{i}" for i in range(60)]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    order = [ids[j] for j in np.argsort(-(unit @ unit[0]))]  # n0 first
    with open_store(spec) as store:
        store.create(CollectionMeta("m", 8))
        store.upsert([point_id(i) for i in ids], x, [{"note_id": i, "title": ""} for i in ids])
        for skipped in (order[:3], order[: MAX_DROPPED + 4]):
            got = related_to_vector(store, x[0], 5, exclude=[point_id(i) for i in skipped])
            assert [r.note_id for r in got] == [i for i in order if i not in skipped][:5]
            assert [r.rank for r in got] == [1, 2, 3, 4, 5]
