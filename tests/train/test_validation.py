"""Validation's val set follows the evaluation protocol exactly as `i2i eval` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.contracts import read_notes, read_split_notes
from retriever.evaluate import build_eval_set
from train import validation
from train.data import load_pairs
from train.testing import clustered_image_split
from train.validation import build_val_set


def _write(tmp_path: Path, rows: list[tuple[str, str, int]], with_rank: bool = True) -> Path:
    df = pl.DataFrame({"query_id": [r[0] for r in rows], "target_id": [r[1] for r in rows]})
    if with_rank:
        df = df.with_columns(pl.Series("rank", [r[2] for r in rows]), pl.lit(1.0).alias("score"))
    path = tmp_path / "val.parquet"
    df.write_parquet(path)
    return path


def test_validation_and_eval_pick_the_same_pairs_and_pool(synth_platform: Path, tmp_path: Path) -> None:
    notes = read_notes(synth_platform / "notes.parquet")
    ids = notes["note_id"].to_list()
    # Tied ranks (a pairs file without rank is all rank 1): the order must come from the target id.
    rows = [(ids[0], ids[3], 1), (ids[0], ids[2], 1), (ids[1], ids[2], 1), (ids[1], ids[4], 1)]
    split_notes = ids[:8]  # four notes of the split have no pair
    for with_rank in (True, False):
        for perm in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
            path = _write(tmp_path, [rows[i] for i in perm], with_rank)
            val = build_val_set(load_pairs(notes, path, split_note_ids=split_notes))
            got = (
                [val.notes[i]["note_id"] for i in val.query_rows],
                [val.notes[i]["note_id"] for i in val.target_rows],
                sorted(val.notes[i]["note_id"] for i in val.pool_rows),
            )
            pairs = pl.read_parquet(path)
            if not with_rank:
                pairs = pairs.with_columns(pl.lit(1).alias("rank"))
            es = build_eval_set(notes, pairs, split="val", split_notes=split_notes)
            assert got == (
                [q["note_id"] for q in es.queries],
                es.targets,
                sorted(p["note_id"] for p in es.pool),
            )
            assert got[:2] == ([ids[0], ids[1]], [ids[2], ids[4]])
            assert got[2] == sorted(set(split_notes) - {ids[0], ids[1]})
            # The calibration's sample: every pair, the greedy ones and the two they skip.
            all_pairs = {(val.notes[q]["note_id"], val.notes[t]["note_id"]) for q, t in val.all_pairs}
            assert all_pairs == {(q, t) for q, t, _ in rows} and len(val.all_pairs) == 4


def test_load_splits_reads_the_val_notes_of_a_mined_directory(
    synth_platform: Path, synth_pairs: Path
) -> None:
    notes = read_notes(synth_platform / "notes.parquet")
    val_notes = read_split_notes(synth_pairs, "val")
    assert val_notes is not None
    split = load_pairs(notes, synth_pairs / "val.parquet", split_note_ids=val_notes)
    val = build_val_set(split)
    assert {n["note_id"] for n in val.notes} == set(val_notes) & set(notes["note_id"])
    assert read_split_notes(tmp := synth_pairs / "nowhere", "val") is None and not tmp.exists()


def test_the_calibration_sample_is_capped_by_a_fixed_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    split, _, _ = clustered_image_split(groups=2, per_group=6)  # 2 x 6 x 5 = 60 pairs
    everything = build_val_set(split).all_pairs
    assert len(everything) == 60
    monkeypatch.setattr(validation, "MAX_ALL_PAIRS", 25)
    capped = build_val_set(split).all_pairs
    assert len(capped) == 25 and np.array_equal(capped, build_val_set(split).all_pairs)
    assert {tuple(p) for p in capped} <= {tuple(p) for p in everything}
    assert len({tuple(p) for p in capped}) == 25
