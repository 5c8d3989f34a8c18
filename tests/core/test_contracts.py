"""`read_notes`: the tags column (explicit tags merged with content hashtags)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.contracts import merge_tags, read_notes


def test_tags_are_merged_with_hashtags(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "note_id": ["a", "b", "c", "d"],
            "title": ["x", None, "z", "w"],
            "content": ["#one# hi #two# #one#", "", None, "no tags here"],
            "tags": [["q", "", None, "q", "one"], None, [], ["é"]],
        }
    ).write_parquet(tmp_path / "notes.parquet")
    df = read_notes(tmp_path / "notes.parquet")
    assert df.schema["tags"] == pl.List(pl.Utf8)
    assert df["tags"].to_list() == [["q", "one", "two"], [], [], ["é"]]
    assert df["title"].to_list() == ["x", "", "z", "w"] and df["content"].to_list()[2] == ""
    assert merge_tags(None, "a #b# c") == ["b"] and merge_tags(["b"], None) == ["b"]


def test_an_empty_table_keeps_its_columns(tmp_path: Path) -> None:
    schema = {"note_id": pl.Utf8, "title": pl.Utf8, "content": pl.Utf8}
    pl.DataFrame({"note_id": [], "title": [], "content": []}, schema=schema).write_parquet(
        tmp_path / "n.parquet"
    )
    df = read_notes(tmp_path / "n.parquet")
    assert df.height == 0 and df.schema["tags"] == pl.List(pl.Utf8)
