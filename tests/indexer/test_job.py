"""The index job on both real backends: idempotent, incremental, resumable, strict."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from core.contracts import notes_to_dicts, read_notes
from core.errors import UserError
from indexer.backends import StoreSpec, open_store
from indexer.job import index_notes
from indexer.store import VectorStore, point_id
from indexer.testing import HashingEmbedder

REPO = Path(__file__).resolve().parents[2]


def _write(df: pl.DataFrame, path: Path) -> Path:
    df.write_parquet(path)
    return path


def _stored_vectors(store: VectorStore, note_ids: list[str]) -> np.ndarray:
    got = {p.id: p.vector for p in store.retrieve([point_id(n) for n in note_ids])}
    return np.stack([got[point_id(n)] for n in note_ids])


def test_index_is_idempotent_and_incremental(store: VectorStore, tmp_path: Path, make_notes) -> None:
    notes = _write(make_notes(60), tmp_path / "notes.parquet")
    emb = HashingEmbedder()
    first = index_notes(notes, emb, store, batch_size=16)
    assert (first.collection, first.new, first.embedded, first.points) == ("created", 60, 60, 60)

    again = index_notes(notes, emb, store, batch_size=16)
    assert (again.collection, again.embedded, again.unchanged, again.points) == ("opened", 0, 60, 60)
    assert emb.calls == 60  # nothing embedded twice

    df = make_notes(60).with_columns(
        pl.when(pl.col("note_id") == "n0003")
        .then(pl.lit("a new body"))
        .otherwise(pl.col("content"))
        .alias("content")
    )
    df = pl.concat([df, make_notes(2, start=60)])
    changed = index_notes(_write(df, notes), emb, store, batch_size=16)
    assert (changed.new, changed.changed, changed.unchanged, changed.embedded) == (2, 1, 59, 3)
    assert changed.points == 62
    expected = emb.embed(notes_to_dicts(read_notes(notes)))
    np.testing.assert_allclose(_stored_vectors(store, df["note_id"].to_list()), expected, atol=1e-5)
    payload = store.retrieve([point_id("n0003")])[0].payload
    assert set(payload) == {"note_id", "title", "content_hash"}  # the model is the collection's
    assert payload["note_id"] == "n0003" and payload["content_hash"] and store.meta().model_id == emb.model_id

    full = index_notes(notes, emb, store, full=True)
    assert full.embedded == 62 and full.points == 62


def test_unchanged_means_same_content_hash(store: VectorStore, tmp_path: Path, make_notes) -> None:
    """The skip compares content hashes only (the collection guard covers the model): a
    point whose stored hash differs, or that has none, is re-indexed; the rest are not."""
    notes = _write(make_notes(6), tmp_path / "notes.parquet")
    emb = HashingEmbedder()
    index_notes(notes, emb, store)
    vec = _stored_vectors(store, ["n0000"])
    store.upsert([point_id("n0001")], vec, [{"note_id": "n0001", "title": "x", "content_hash": "stale"}])
    store.upsert([point_id("n0002")], vec, [{"note_id": "n0002", "title": "x"}])  # no hash at all
    again = index_notes(notes, emb, store)
    assert (again.new, again.changed, again.unchanged, again.embedded) == (0, 2, 4, 2)
    np.testing.assert_allclose(
        _stored_vectors(store, ["n0001", "n0002"]),
        emb.embed(notes_to_dicts(read_notes(notes))[1:3]),
        atol=1e-5,
    )
    assert index_notes(notes, emb, store).embedded == 0


def test_payloads_with_model_id_from_earlier_versions(store: VectorStore, tmp_path: Path, make_notes) -> None:
    """A collection written when every payload also held `model_id`: unchanged notes are
    skipped, changed ones rewritten without it, and `related` answers as before."""
    from indexer.content import content_hash
    from indexer.store import CollectionMeta
    from retriever.related import related

    emb = HashingEmbedder()
    df = read_notes(_write(make_notes(10), tmp_path / "notes.parquet"))
    old = notes_to_dicts(df)
    store.create(CollectionMeta(model_id=emb.model_id, dim=emb.dim))
    store.upsert(
        [point_id(n["note_id"]) for n in old],
        emb.embed(old),
        [
            {"note_id": n["note_id"], "title": n["title"], "content_hash": content_hash(n, tmp_path),
             "model_id": emb.model_id}
            for n in old
        ],
    )  # fmt: skip
    before = [(r.note_id, r.title) for r in related(store, "n0004", 5)]
    assert index_notes(tmp_path / "notes.parquet", emb, store).unchanged == 10 and emb.calls == 10
    assert [(r.note_id, r.title) for r in related(store, "n0004", 5)] == before

    edited = df.with_columns(
        pl.when(pl.col("note_id") == "n0004").then(pl.lit("rewritten")).otherwise("content").alias("content")
    )
    again = index_notes(_write(edited, tmp_path / "notes.parquet"), emb, store)
    assert (again.changed, again.unchanged, again.embedded) == (1, 9, 1)
    payloads = {p.id: p.payload for p in store.retrieve([point_id("n0004"), point_id("n0005")], False)}
    assert set(payloads[point_id("n0004")]) == {"note_id", "title", "content_hash"}
    assert payloads[point_id("n0005")]["model_id"] == emb.model_id  # untouched, still readable


def test_removed_notes_are_kept_unless_pruned(store: VectorStore, tmp_path: Path, make_notes) -> None:
    emb = HashingEmbedder()
    index_notes(_write(make_notes(20), tmp_path / "a.parquet"), emb, store)
    kept = index_notes(_write(make_notes(16), tmp_path / "b.parquet"), emb, store)
    assert (kept.not_in_table, kept.pruned, kept.points) == (4, 0, 20)
    pruned = index_notes(tmp_path / "b.parquet", emb, store, prune=True)  # 20%: within the default
    assert (pruned.not_in_table, pruned.pruned, pruned.points) == (4, 4, 16)


def test_prune_refuses_to_empty_the_collection(store: VectorStore, tmp_path: Path, make_notes) -> None:
    emb = HashingEmbedder()
    index_notes(_write(make_notes(20), tmp_path / "a.parquet"), emb, store)
    empty = _write(make_notes(0), tmp_path / "empty.parquet")  # a 0-row notes table
    with pytest.raises(UserError, match=r"would delete 20 of the 20 points .*100%.*--max-prune 20%.*--force"):
        index_notes(empty, emb, store, prune=True)
    assert store.count() == 20
    half = _write(make_notes(10), tmp_path / "half.parquet")
    assert index_notes(half, emb, store, prune=True, max_prune_share=0.5).points == 10
    assert index_notes(empty, emb, store, prune=True, force=True).points == 0


def test_refuses_to_mix_models(store: VectorStore, tmp_path: Path, make_notes) -> None:
    notes = _write(make_notes(10), tmp_path / "notes.parquet")
    index_notes(notes, HashingEmbedder(dim=32), store)
    with pytest.raises(UserError, match=r"hashing-bow-d32.*other-model.*--recreate"):
        index_notes(notes, HashingEmbedder(dim=32, model_id="other-model"), store)
    with pytest.raises(UserError, match="dimension 32, not 16"):
        index_notes(notes, HashingEmbedder(dim=16), store)
    assert store.count() == 10
    replaced = index_notes(notes, HashingEmbedder(dim=16), store, recreate=True)
    assert (replaced.collection, replaced.embedded, store.meta().dim) == ("recreated", 10, 16)


def test_bad_images_are_counted_not_skipped(store: VectorStore, tmp_path: Path, make_notes) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "img" / "ok.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png at all")
    df = make_notes(4).with_columns(
        pl.Series("image", ["img/ok.png", "img/broken.png", "img/gone.png", None])
    )
    summary = index_notes(_write(df, tmp_path / "notes.parquet"), HashingEmbedder(), store)
    assert (summary.embedded, summary.points) == (4, 4)
    assert (summary.image_missing, summary.image_unreadable, summary.no_image) == (1, 1, 1)
    assert any("gone.png (missing)" in e for e in summary.image_examples)
    # The image file is part of the content: rewriting it re-embeds that note only.
    Image.new("RGB", (20, 16), (0, 10, 200)).save(tmp_path / "img" / "ok.png")
    again = index_notes(tmp_path / "notes.parquet", HashingEmbedder(), store)
    assert (again.changed, again.embedded) == (1, 1)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pl.DataFrame({"note_id": ["a"], "title": ["t"]}), "lacks column.*content"),
        (
            pl.DataFrame({"note_id": ["a", "a"], "title": ["t", "u"], "content": ["", ""]}),
            "duplicate note_id",
        ),
    ],
)
def test_bad_input_is_a_clear_error(
    store: VectorStore, tmp_path: Path, frame: pl.DataFrame, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        index_notes(_write(frame, tmp_path / "notes.parquet"), HashingEmbedder(), store)
    assert not store.exists()  # nothing created for bad input


_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from indexer.backends import StoreSpec, open_store
    from indexer.job import index_notes
    from indexer.testing import HashingEmbedder

    def progress(done, total):
        print(f"done {done}", flush=True)
        if done >= 100:
            time.sleep(60)  # the parent kills us here, mid-run, without a chance to flush

    where = Path(sys.argv[2])
    spec = StoreSpec(workspace=where) if sys.argv[1] == "edge" else StoreSpec(local_path=where)
    with open_store(spec) as store:
        index_notes(sys.argv[3], HashingEmbedder(), store, batch_size=25, on_progress=progress)
    """
)


@pytest.mark.parametrize("backend", ["edge", "client-local"])
def test_killed_run_is_completed_by_a_rerun(backend: str, tmp_path: Path, make_notes) -> None:
    notes = _write(make_notes(200), tmp_path / "notes.parquet")
    where = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, backend, str(where), str(notes)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "done 100":
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    spec = StoreSpec(workspace=where) if backend == "edge" else StoreSpec(local_path=where)
    emb = HashingEmbedder()
    with open_store(spec) as store:
        before = store.count()
        assert 100 <= before < 200  # the finished batches survived the kill
        resumed = index_notes(notes, emb, store, batch_size=25)
        assert resumed.unchanged == before and resumed.embedded == 200 - before
        ids = [pid for pid, _ in store.scroll(["note_id"])]
        assert len(ids) == len(set(ids)) == store.count() == 200
        df = read_notes(notes)
        np.testing.assert_allclose(
            _stored_vectors(store, df["note_id"].to_list()), emb.embed(notes_to_dicts(df)), atol=1e-5
        )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_a_fifo_image_is_counted_not_waited_for(store: VectorStore, tmp_path: Path, make_notes) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    notes = make_notes(3).with_columns(pl.Series("image", ["pipe.png", None, None]))
    summary = index_notes(_write(notes, tmp_path / "notes.parquet"), HashingEmbedder(), store)
    assert summary.image_unreadable == 1 and summary.points == 3


def test_index_decodes_each_image_once(store: VectorStore, tmp_path: Path, make_notes, monkeypatch) -> None:
    """The embedder reports each note's image status; the indexer does not decode again."""
    import torch

    import core.images
    from train.embed import NoteEmbedder
    from train.model import build_model
    from train.testing import tiny_model_config

    (tmp_path / "img").mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (60 * i, 10, 200)).save(tmp_path / "img" / f"ok{i}.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png at all")
    images = ["img/ok0.png", "img/ok1.png", "img/ok2.png", "img/broken.png", "img/gone.png", None]
    df = make_notes(6).with_columns(pl.Series("image", images))
    decoded: list[str] = []
    real_load = core.images.load_image

    def counting_load(path, *args, **kwargs):
        decoded.append(Path(path).name)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(core.images, "load_image", counting_load)  # every image decode goes through it
    torch.manual_seed(0)
    embedder = NoteEmbedder(build_model(tiny_model_config()), device="cpu")
    summary = index_notes(_write(df, tmp_path / "notes.parquet"), embedder, store)
    assert sorted(decoded) == ["broken.png", "ok0.png", "ok1.png", "ok2.png"]  # each once
    assert (summary.image_missing, summary.image_unreadable, summary.no_image) == (1, 1, 1)
    assert any("broken.png (unreadable)" in e for e in summary.image_examples)
