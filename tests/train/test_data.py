"""Pairs joined to notes, lazy images with failure counts, the resumable sharded sampler."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from core.contracts import read_notes
from core.errors import UserError
from train.data import (
    ImageStatus,
    NoteImageLoader,
    PairBatchSampler,
    PairCollate,
    PairDataset,
    PairSplit,
    load_pairs,
)
from train.schedule import lr_at, warmup_steps_for


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A stand-in for the encoder transform: (3, 8, 8) from any PIL image."""
    return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1)


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """6 notes (a: good png, b: corrupt file, c: missing file, d: no image, e, f: good),
    and pairs including a self pair and pairs naming unknown notes."""
    images = tmp_path / "img"
    images.mkdir()
    for name, color in (("a", (255, 0, 0)), ("e", (0, 255, 0)), ("f", (0, 0, 255))):
        Image.new("RGB", (20, 10), color).save(images / f"{name}.png")
    (images / "b.png").write_bytes(b"not a png at all")
    pl.DataFrame(
        {
            "note_id": ["a", "b", "c", "d", "e", "f"],
            "title": ["A", "B", "C", "D", "E", "F"],
            "content": ["x", "y", "z", "w", "v", "u"],
            "image": ["img/a.png", "img/b.png", "img/c.png", None, "img/e.png", "img/f.png"],
        }
    ).write_parquet(tmp_path / "notes.parquet")
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    pl.DataFrame(
        {
            "query_id": ["a", "b", "a", "ghost", "c", "e", "d"],
            "target_id": ["b", "c", "a", "a", "ghost2", "f", "a"],
            "score": [1.0] * 7,
            "rank": [1, 1, 2, 1, 1, 1, 1],
        }
    ).write_parquet(pairs / "train.parquet")
    return tmp_path, pairs


def test_load_pairs_drops_and_counts_missing_notes_and_self_pairs(corpus: tuple[Path, Path]) -> None:
    root, pairs = corpus
    notes = read_notes(root / "notes.parquet")
    split = load_pairs(notes, pairs / "train.parquet")
    ids = [n["note_id"] for n in split.notes]
    got = [(ids[q], ids[t]) for q, t in zip(split.query, split.target, strict=True)]
    assert got == [("a", "b"), ("b", "c"), ("e", "f"), ("d", "a")]  # file order kept
    assert split.rank.tolist() == [1, 1, 1, 1]
    assert (split.pairs_read, split.dropped_missing_note, split.dropped_self_pair) == (7, 2, 1)


def test_missing_pairs_file_or_column_is_a_user_error(corpus: tuple[Path, Path]) -> None:
    root, pairs = corpus
    notes = read_notes(root / "notes.parquet")
    with pytest.raises(UserError, match="pairs file not found"):
        load_pairs(notes, pairs / "val.parquet")
    pl.DataFrame({"query_id": ["a"]}).write_parquet(pairs / "bad.parquet")
    with pytest.raises(UserError, match="lacks column"):
        load_pairs(notes, pairs / "bad.parquet")


def test_broken_and_absent_images_become_blank_and_are_counted(corpus: tuple[Path, Path]) -> None:
    root, pairs = corpus
    split = load_pairs(read_notes(root / "notes.parquet"), pairs / "train.parquet")

    def fake_collator(notes, pixel_values):  # hands back what the model's collator would get
        return {"ids": [n["note_id"] for n in notes], "pixel_values": pixel_values}

    dataset = PairDataset(split, NoteImageLoader(root, to_tensor))
    # Two workers decode images; the counts come back with each batch and add up here.
    loader = DataLoader(dataset, batch_size=2, collate_fn=PairCollate(fake_collator), num_workers=2)
    totals = {"images_loaded": 0, "images_absent": 0, "images_broken": 0}
    seen = []
    for batch, counts in loader:
        seen.append((batch["ids"], batch["pixel_values"]))
        for k in totals:
            totals[k] += counts[k]
    # 4 pairs = 8 images: a, b*, b*, c*, e, f, d(none), a   (* = broken)
    assert totals == {"images_loaded": 4, "images_absent": 1, "images_broken": 3}
    ids, pix = seen[0]
    assert ids == ["a", "b", "b", "c"]  # laid out [q_1, q_2, t_1, t_2]
    assert pix is not None and pix.shape == (4, 3, 8, 8)
    blank = to_tensor(Image.new("RGB", (8, 8), (127, 127, 127)))
    assert torch.equal(pix[1], blank) and torch.equal(pix[3], blank)  # b and c are blank
    assert pix[0, 0].mean() == 255  # a is red


def test_text_only_never_opens_an_image(corpus: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, pairs = corpus
    split = load_pairs(read_notes(root / "notes.parquet"), pairs / "train.parquet")

    def boom(*args, **kwargs):
        raise AssertionError("text-only must not load images")

    monkeypatch.setattr("train.data.load_image", boom)
    q, t, q_pix, t_pix, q_status, t_status = PairDataset(split, NoteImageLoader(root, None))[0]
    assert (q["note_id"], t["note_id"], q_pix, t_pix) == ("a", "b", None, None)
    assert q_status == t_status == ImageStatus.NO_IMAGE


def synthetic_split(n_pairs: int, n_notes: int, seed: int = 0) -> PairSplit:
    rng = np.random.default_rng(seed)
    q = rng.integers(0, n_notes, n_pairs)
    t = (q + rng.integers(1, n_notes, n_pairs)) % n_notes  # never a self pair
    notes = [{"note_id": f"n{i}"} for i in range(n_notes)]
    return PairSplit(notes, q.astype(np.int64), t.astype(np.int64), np.ones(n_pairs, np.int64), n_pairs, 0, 0)


def batches(sampler: PairBatchSampler, epoch: int, start: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch, start)
    return list(sampler)


def test_sampler_is_deterministic_and_reshuffles_each_epoch() -> None:
    split = synthetic_split(200, 50)
    a, b = PairBatchSampler(split, 8, seed=3), PairBatchSampler(split, 8, seed=3)
    assert batches(a, 0) == batches(b, 0)
    assert batches(a, 0) != batches(a, 1)
    assert batches(a, 0) != batches(PairBatchSampler(split, 8, seed=4), 0)
    epoch = batches(a, 1)
    assert len(epoch) == a.batches_per_epoch == 25
    flat = [i for batch in epoch for i in batch]
    assert len(flat) == len(set(flat))  # every pair at most once per epoch


def test_sampler_resumes_mid_epoch_and_respects_limit() -> None:
    split = synthetic_split(200, 50)
    sampler = PairBatchSampler(split, 8, seed=0)
    full = batches(sampler, 2)
    assert batches(sampler, 2, start=7) == full[7:]
    sampler.set_epoch(2, start=3, limit=10)
    assert list(sampler) == full[3:10] and len(sampler) == 7


def test_rank_shards_concatenate_to_the_single_process_batch() -> None:
    split = synthetic_split(300, 80)
    single = batches(PairBatchSampler(split, 12, seed=5), 0)
    ranks = [batches(PairBatchSampler(split, 4, seed=5, rank=r, world_size=3), 0) for r in range(3)]
    assert len(single) == len(ranks[0]) == len(ranks[2])  # every rank runs the same number of steps
    for b, batch in enumerate(single):
        assert batch == ranks[0][b] + ranks[1][b] + ranks[2][b]


def test_global_batches_avoid_repeating_a_note() -> None:
    # 40 notes, 300 pairs: a batch of 8 pairs touches 16 notes, plenty of room to avoid repeats.
    split = synthetic_split(300, 40, seed=1)
    unique = batches(PairBatchSampler(split, 8, seed=0), 0)
    plain = batches(PairBatchSampler(split, 8, seed=0, unique_notes=False), 0)

    def repeats(epoch: list[list[int]]) -> int:
        count = 0
        for batch in epoch:
            ids = np.concatenate([split.query[batch], split.target[batch]])
            count += len(ids) - len(np.unique(ids))
        return count

    assert repeats(plain) > 0  # random batches do collide here ...
    assert repeats(unique[:-3]) == 0  # ... deferred pairs keep all but the last batches clean
    assert len(unique) == len(plain)
    flat = [i for batch in unique for i in batch]
    assert len(flat) == len(set(flat))


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    total, warm = 100, warmup_steps_for(100, 0.1)
    lrs = [lr_at(s, 1.0, warm, total, min_lr_ratio=0.1) for s in range(total)]
    assert warm == 10 and lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(lrs[:10]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert warmup_steps_for(100, 0.0) == 0 and lr_at(0, 2.0, 0, 10) == pytest.approx(2.0)


def test_val_set_follows_the_eval_protocol() -> None:
    from train.validation import build_val_set

    notes = [{"note_id": n} for n in ("a", "b", "c", "d", "e")]
    # File order puts a's rank-2 target first; the protocol takes (query, rank) order.
    q, t, rank = [0, 0, 2, 3], [2, 1, 3, 4], [2, 1, 1, 1]
    split = PairSplit(notes, np.array(q), np.array(t), np.array(rank), 4, 0, 0)
    val = build_val_set(split)
    ids = [n["note_id"] for n in val.notes]
    pairs = [(ids[a], ids[b]) for a, b in zip(val.query_rows, val.target_rows, strict=True)]
    assert pairs == [("a", "b"), ("c", "d")]  # d is used, so (d, e) is skipped
    assert [ids[p] for p in val.pool_rows] == ["b", "d", "e"]  # split notes that are not queries
    assert [ids[val.pool_rows[i]] for i in val.target_in_pool] == ["b", "d"]
