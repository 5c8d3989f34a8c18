"""The packed payload of the Edge store: what it writes, and that every read undoes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from indexer.edge import PACKED_FIELD, EdgeStore, pack_payload, unpack_payload
from indexer.job import note_payload
from indexer.store import CollectionMeta, point_id

AWKWARD = [
    ("n1", "a title", "0" * 32),
    ("12:34", "3:abc", "ff"),  # digits and colons where the lengths go
    ("", "", ""),
    ("日本:語", "é" * 5 + "\x1f\n\t", "h"),  # characters, not bytes
    ("x" * 300, "title: 12:x", "9:" * 4),
]


@pytest.mark.parametrize(("note_id", "title", "digest"), AWKWARD)
def test_pack_round_trips(note_id: str, title: str, digest: str) -> None:
    payload = note_payload(note_id, title, digest)
    packed = pack_payload(payload)
    assert list(packed) == [PACKED_FIELD] and isinstance(packed[PACKED_FIELD], str)
    assert unpack_payload(packed) == payload


@pytest.mark.parametrize(
    "payload",
    [
        {"note_id": "n1", "title": "t"},  # not the three fields
        {"note_id": "n1", "title": "t", "content_hash": "h", "model_id": "m"},
        {"note_id": 7, "title": "t", "content_hash": "h"},  # not all strings
    ],
)
def test_other_payloads_are_stored_as_given(payload: dict[str, object]) -> None:
    assert pack_payload(payload) == payload
    assert unpack_payload(payload) == payload


def _store(tmp_path: Path, dim: int = 8) -> EdgeStore:
    store = EdgeStore(tmp_path / "c")
    store.create(CollectionMeta("m", dim))
    return store


def test_every_read_sees_the_three_fields(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((len(AWKWARD), 8)).astype(np.float32)
    ids = [point_id(n) for n, _, _ in AWKWARD]
    payloads = [note_payload(*row) for row in AWKWARD]
    store = _store(tmp_path)
    store.upsert(ids, vecs, payloads)

    # One string field reaches the shard.
    raw = store.shard.retrieve(ids[:1], with_payload=True, with_vector=False)
    assert list(raw[0].payload or {}) == [PACKED_FIELD]

    by_id = dict(zip(ids, payloads, strict=True))
    assert {p.id: p.payload for p in store.retrieve(ids)} == by_id
    assert dict(store.scroll(["content_hash"], page=2)) == {
        i: {"content_hash": p["content_hash"]} for i, p in by_id.items()
    }
    assert dict(store.scroll(["note_id", "title", "content_hash"])) == by_id
    for row, hits in enumerate(store.query_batch(vecs, k=len(ids))):
        assert {h.id: h.payload for h in hits} == {
            i: {"note_id": p["note_id"], "title": p["title"]} for i, p in by_id.items()
        }
        assert hits[0].id == ids[row]
    store.close()


def test_points_written_before_the_packing_read_as_before(tmp_path: Path) -> None:
    """A collection written by an earlier i2i (separate fields, `model_id` in each) keeps
    working, also after packed points join it."""
    store = _store(tmp_path, dim=4)
    old = {"note_id": "old", "title": "Old title", "content_hash": "aa", "model_id": "m"}
    vec = [1.0, 0.0, 0.0, 0.0]
    store.shard.update(qe.UpdateOperation.upsert_points([qe.Point(point_id("old"), vec, old)]))
    store.upsert(
        [point_id("new")], np.array([[0.9, 0.1, 0.0, 0.0]], np.float32), [note_payload("new", "New", "bb")]
    )

    assert store.retrieve([point_id("old")])[0].payload == old
    assert dict(store.scroll(["content_hash"])) == {
        point_id("old"): {"content_hash": "aa"},
        point_id("new"): {"content_hash": "bb"},
    }
    hits = store.query(np.array(vec, np.float32), 2)
    assert [h.payload for h in hits] == [
        {"note_id": "old", "title": "Old title"},
        {"note_id": "new", "title": "New"},
    ]
    store.close()
