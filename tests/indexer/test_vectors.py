"""Vector shards: sharded embedding, resume per part, and index/eval reading them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.contracts import notes_to_dicts, read_notes
from core.errors import UserError
from indexer.job import index_notes
from indexer.store import VectorStore, point_id
from indexer.testing import HashingEmbedder
from indexer.vectors import VectorFiles, embed_to_vectors, note_shard, parse_shard


def notes_file(make_notes, tmp_path: Path, n: int = 57) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "notes.parquet"
    make_notes(n).write_parquet(path)
    return path


def test_shards_cover_every_note_once_and_match_direct_embedding(tmp_path: Path, make_notes) -> None:
    path = notes_file(make_notes, tmp_path)
    notes = read_notes(path)
    emb = HashingEmbedder()
    out = tmp_path / "vectors"
    runs = [
        embed_to_vectors(notes, emb, out, image_root=tmp_path, shard=i, shards=3, part_size=7)
        for i in range(3)
    ]
    assert sum(r.notes for r in runs) == 57 and all(r.notes > 0 for r in runs)
    assert emb.calls == 57
    files = VectorFiles(out)
    assert (len(files), files.model_id, files.dim) == (57, emb.model_id, emb.dim)
    dicts = notes_to_dicts(notes)
    np.testing.assert_allclose(files.embed(dicts), HashingEmbedder().embed(dicts), atol=1e-6)
    # The shard of a note depends on its id only (not on the table around it).
    assert note_shard(["n0001", "n0002"], 3).tolist() == note_shard(["n0002", "n0001"], 3).tolist()[::-1]


def test_a_killed_rank_reruns_only_its_unfinished_parts(tmp_path: Path, make_notes) -> None:
    path = notes_file(make_notes, tmp_path)
    notes = read_notes(path)
    out = tmp_path / "vectors"
    first = embed_to_vectors(
        notes, HashingEmbedder(), out, image_root=tmp_path, shard=1, shards=2, part_size=5
    )
    parts = sorted(out.glob("part-00001-of-00002-*.parquet"))
    assert len(parts) == first.parts >= 3
    parts[1].unlink()  # killed before this part was renamed into place
    (out / f".{parts[2].name}.123.tmp").write_bytes(b"half a file")  # a torn temporary
    emb = HashingEmbedder()
    again = embed_to_vectors(notes, emb, out, image_root=tmp_path, shard=1, shards=2, part_size=5)
    assert (again.parts_done_before, again.embedded, emb.calls) == (first.parts - 1, 5, 5)
    # A changed note re-embeds its part only; another model re-embeds everything.
    changed = notes.with_columns(
        pl.when(pl.col("note_id") == pl.col("note_id").first())
        .then(pl.lit("new"))
        .otherwise("content")
        .alias("content")
    )
    emb2 = HashingEmbedder()
    embed_to_vectors(changed, emb2, out, image_root=tmp_path, shard=1, shards=2, part_size=5)
    assert emb2.calls <= 5
    other = HashingEmbedder(model_id="other")
    embed_to_vectors(notes, other, out, image_root=tmp_path, shard=1, shards=2, part_size=5)
    assert other.calls == first.notes


def test_index_from_vectors_keeps_the_guards(store: VectorStore, tmp_path: Path, make_notes) -> None:
    path = notes_file(make_notes, tmp_path)
    notes = read_notes(path)
    out = tmp_path / "vectors"
    for i in range(2):
        embed_to_vectors(notes, HashingEmbedder(), out, image_root=tmp_path, shard=i, shards=2, part_size=8)
    files = VectorFiles(out)
    first = index_notes(path, files, store, batch_size=4096)
    assert (first.new, first.embedded, first.points) == (57, 57, 57)
    again = index_notes(path, files, store, batch_size=4096)
    assert (again.embedded, again.unchanged) == (0, 57)  # idempotent
    got = store.retrieve([point_id("n0010")])[0]
    want = HashingEmbedder().embed(notes_to_dicts(notes.filter(pl.col("note_id") == "n0010")))[0]
    np.testing.assert_allclose(got.vector, want, atol=1e-5)
    assert store.meta().model_id == files.model_id and "model_id" not in got.payload
    # Vectors of another model are refused by the collection's model guard.
    other = tmp_path / "other"
    embed_to_vectors(notes, HashingEmbedder(model_id="other"), other, image_root=tmp_path)
    with pytest.raises(UserError, match="refusing to mix"):
        index_notes(path, VectorFiles(other), store)
    # A note edited after embedding: its stored vector is stale, so it is refused.
    edited = notes.with_columns(pl.lit("edited").alias("content"))
    edited.write_parquet(path)
    with pytest.raises(UserError, match="57 changed since embedding"):
        index_notes(path, files, store)


def test_bad_shards_and_directories_are_user_errors(tmp_path: Path, make_notes) -> None:
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/2", "x", "1/0"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(UserError, match="no vector parts"):
        VectorFiles(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not vector parts"):
        embed_to_vectors(
            read_notes(notes_file(make_notes, tmp_path)), HashingEmbedder(), tmp_path, image_root=None
        )
    a, b = tmp_path / "a", tmp_path / "b"
    notes = read_notes(tmp_path / "notes.parquet")
    embed_to_vectors(notes, HashingEmbedder(), a, image_root=None)
    embed_to_vectors(notes, HashingEmbedder(model_id="m2"), b, image_root=None)
    for p in b.glob("*.parquet"):
        p.rename(a / p.name.replace("part-00000-of-00001", "part-00000-of-00002"))
    with pytest.raises(UserError, match="mixes vectors of 2 models"):
        VectorFiles(a)
