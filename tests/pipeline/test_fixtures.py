from __future__ import annotations

from pathlib import Path

import polars as pl

from core.contracts import PAIR_COLUMNS, SPLITS, read_notes


def test_synth_platform_fixture_has_the_contract_layout(synth_platform: Path) -> None:
    notes = read_notes(synth_platform / "notes.parquet")
    assert notes.height == 120
    assert all((synth_platform / p).is_file() for p in notes["image"])
    assert sorted(synth_platform.joinpath("logs").glob("part-*.parquet"))
    truth = pl.read_parquet(synth_platform / "truth.parquet")
    assert truth["note_id"].to_list() == notes["note_id"].to_list()


def test_synth_pairs_fixture_has_pairs_in_every_split(synth_pairs: Path) -> None:
    for split in SPLITS:
        df = pl.read_parquet(synth_pairs / f"{split}.parquet")
        assert df.columns == list(PAIR_COLUMNS)
        assert df.height >= 100, split
    assert (synth_pairs / "summary.json").is_file()
