"""The Spark engine writes the same pair files and counts as the Polars engine (local[2])."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from core.contracts import SPLITS
from pipeline.mine import mine_pairs, write_pairs
from pipeline.spark_mine import mine_pairs_spark, spark_session

T0 = datetime(2024, 1, 1)
DAY = 86_400


@pytest.fixture(scope="module")
def spark():  # type: ignore[no-untyped-def]
    session = spark_session("local[2]", shuffle_partitions=3)
    yield session
    session.stop()


def edge_case_logs(folder: Path) -> Path:
    """Random logs plus every edge case the semantics pin, as Parquet and CSV files."""
    folder.mkdir(parents=True)
    rng = random.Random(13)
    rows: list[tuple[str | None, str | None, datetime | None, str]] = []
    for u in range(40):
        for _ in range(rng.randrange(1, 25)):
            rows.append(
                (
                    f"u{u}",
                    f"n{rng.randrange(60):02d}",
                    T0 + timedelta(seconds=rng.randrange(0, 3 * DAY, 600)),
                    "view",
                )
            )
    rows += [("eq", "A", T0, "view"), ("eq", "B", T0, "view")]  # equal timestamps: both ways
    rows += [("edge", "A", T0, "view"), ("edge", "C", T0 + timedelta(days=1), "view")]  # exactly the window
    rows += [("edge", "D", T0 + timedelta(days=1, seconds=1), "view")]  # one second past A's window
    rows += [("rep", "A", T0, "view")] * 3 + [("rep", "B", T0 + timedelta(hours=1), "view")] * 2  # repeats
    # A heavy user over the cap, with a tie at the cut (same time, notes n05 / n06).
    rows += [("bot", f"n{i % 60:02d}", T0 + timedelta(minutes=i), "view") for i in range(80)]
    rows += [
        ("bot", "n05", T0 + timedelta(minutes=100), "view"),
        ("bot", "n06", T0 + timedelta(minutes=100), "view"),
    ]
    rows += [(None, "A", T0, "view"), ("u1", None, T0, "view"), ("u1", "A", None, "view")]  # nulls, counted
    rows += [("u1", "A", T0, "like"), ("u2", "Z", T0, "click")]  # other events
    df = pl.DataFrame(
        rows,
        schema={"user_id": pl.Utf8, "note_id": pl.Utf8, "ts": pl.Datetime("us"), "event": pl.Utf8},
        orient="row",
    )
    df[: len(df) // 2].write_parquet(folder / "day1.parquet")
    df[len(df) // 2 :].write_parquet(folder / "day2.parquet")
    return folder


# Two runs cover every option: both weightings, cap on/off, min and max score, the event
# filter, a zero split share and another seed (each Spark run costs seconds).
CASES: list[dict[str, Any]] = [
    {
        "weighting": "inverse-activity",
        "window": "6h",
        "top_k": 4,
        "min_score": 0.05,
        "max_score": 0.5,
        "event_col": "event",
        "events": ["view", "like"],
        "max_events_per_user": 30,
        "seed": 3,
    },
    {
        "weighting": "users",
        "window": "1d",
        "top_k": 3,
        "min_score": 2,
        "max_events_per_user": 0,
        "split": "0.5,0,0.5",
    },
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_spark_and_polars_write_the_same_bytes(spark, tmp_path: Path, case: int) -> None:  # type: ignore[no-untyped-def]
    logs = edge_case_logs(tmp_path / "logs")
    opts = CASES[case]
    polars_out, spark_out = tmp_path / "polars", tmp_path / "spark"
    write_pairs(mine_pairs(logs, **opts), polars_out)
    summary = mine_pairs_spark(logs, spark_out, spark=spark, **opts)
    for name in SPLITS:
        ours = (polars_out / f"{name}.parquet").read_bytes()
        assert (spark_out / f"{name}.parquet").read_bytes() == ours, name
    expected = json.loads((polars_out / "summary.json").read_text())
    assert summary["counts"] == expected["counts"]
    assert summary["splits"] == expected["splits"]
    # the split of every note (evaluation pools read it) is the same file from both engines
    assert pl.read_parquet(spark_out / "notes_split.parquet").equals(
        pl.read_parquet(polars_out / "notes_split.parquet")
    )
    assert summary["parameters"] == expected["parameters"]
    assert sum(s["pairs"] for s in summary["splits"].values()) > 0
    engine = summary["engine"]
    assert engine["name"] == "spark" and engine["shuffle_partitions"] == 3
    assert 0 < engine["mean_partition_rows"] <= engine["largest_partition_rows"] <= engine["candidate_rows"]
    if opts.get("max_events_per_user", 1000):  # the cap bounds the heaviest user's rows
        cap = opts.get("max_events_per_user", 1000)
        assert engine["largest_user_rows"] <= cap * cap


def test_csv_text_timestamps_and_a_catalog_table_read_like_parquet(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    logs = edge_case_logs(tmp_path / "logs")
    frame = pl.read_parquet(logs / "*.parquet").drop("event")
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    text = frame.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S"))
    bad = pl.DataFrame({"user_id": ["u1", "u2"], "note_id": ["A", "B"], "ts": ["not a time", "yesterday"]})
    pl.concat([text, bad]).write_csv(csv_dir / "logs.csv")
    opts = {"weighting": "users", "window": "12h", "top_k": 3, "max_events_per_user": 0}
    write_pairs(mine_pairs(csv_dir, **opts), tmp_path / "polars_csv")  # type: ignore[arg-type]
    write_pairs(mine_pairs(logs, **opts), tmp_path / "polars")  # type: ignore[arg-type]
    csv_summary = mine_pairs_spark(csv_dir, tmp_path / "spark_csv", spark=spark, **opts)  # type: ignore[arg-type]
    spark.read.parquet(str(logs)).createOrReplaceTempView("view_events")
    mine_pairs_spark("view_events", tmp_path / "spark_table", spark=spark, **opts)  # type: ignore[arg-type]
    for name in SPLITS:
        ours = (tmp_path / "polars" / f"{name}.parquet").read_bytes()
        assert (tmp_path / "spark_table" / f"{name}.parquet").read_bytes() == ours
        ours_csv = (tmp_path / "polars_csv" / f"{name}.parquet").read_bytes()
        assert (tmp_path / "spark_csv" / f"{name}.parquet").read_bytes() == ours_csv
    expected = json.loads((tmp_path / "polars_csv" / "summary.json").read_text())
    assert csv_summary["counts"] == expected["counts"] and csv_summary["counts"]["dropped_unparsed_ts"] == 2
    assert csv_summary["examples"] == expected["examples"] == {"unparsed_ts": ["not a time", "yesterday"]}
    summary = json.loads((tmp_path / "spark_table" / "summary.json").read_text())
    assert summary["inputs"]["files"] == ["table:view_events"]


def test_cli_engine_spark_through_a_subprocess(tmp_path: Path) -> None:
    import subprocess
    import sys

    logs = edge_case_logs(tmp_path / "logs")
    args = ["--window", "1d", "--top-k", "3", "--weighting", "users"]
    polars = subprocess.run(
        [sys.executable, "-m", "i2i.cli", "mine-pairs", str(logs), "--out", str(tmp_path / "p"), *args],
        capture_output=True,
        text=True,
    )
    assert polars.returncode == 0, polars.stderr
    cmd = [sys.executable, "-m", "i2i.cli", "mine-pairs", str(logs), "--out", str(tmp_path / "s"), *args]
    spark = subprocess.run(
        [*cmd, "--engine", "spark", "--spark-master", "local[1]"], capture_output=True, text=True
    )
    assert spark.returncode == 0, spark.stderr
    assert "spark partitions: largest" in spark.stdout
    for name in SPLITS:
        assert (tmp_path / "s" / f"{name}.parquet").read_bytes() == (
            tmp_path / "p" / f"{name}.parquet"
        ).read_bytes()
    bad = subprocess.run([*cmd, "--engine", "flink"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--engine 'flink' is not known" in bad.stderr
