"""The co-view semantics of `pipeline.mine`, pinned on small hand-written logs."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import pipeline.mine
from core.errors import UserError
from pipeline.logs import format_duration, parse_duration
from pipeline.mine import mine_pairs, parse_memory, resident_bytes, write_pairs
from pipeline.splits import assign_splits

T0 = datetime(2024, 1, 1)
DAY = 86_400


def write_logs(tmp_path: Path, rows: list[tuple[str, str, int]], name: str = "logs.parquet") -> Path:
    """(user, note, seconds after T0) rows -> a Parquet log file with a timestamp column."""
    df = pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "note_id": [r[1] for r in rows],
            "ts": [T0 + timedelta(seconds=r[2]) for r in rows],
        },
        schema={"user_id": pl.Utf8, "note_id": pl.Utf8, "ts": pl.Datetime("us")},
    )
    path = tmp_path / name
    df.write_parquet(path)
    return path


def pairs(path: Path, **kwargs: object) -> pl.DataFrame:
    """All mined pairs in one split (train), with users weighting unless told otherwise."""
    opts: dict[str, object] = {"split": (1, 0, 0), "top_k": 1000, "weighting": "users", "window": "7d"}
    opts.update(kwargs)
    return mine_pairs(path, **opts).pairs["train"]  # type: ignore[arg-type]


def expected(rows: list[tuple[str, str, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"query_id": pl.Utf8, "target_id": pl.Utf8, "score": pl.Float64, "rank": pl.Int32},
        orient="row",
    )


def test_window_edge_counts_and_direction_matters(tmp_path: Path) -> None:
    path = write_logs(tmp_path, [("u1", "A", 0), ("u1", "B", 7 * DAY)])
    assert_frame_equal(pairs(path), expected([("A", "B", 1.0, 1)]))


def test_one_second_past_the_window_is_not_a_co_view(tmp_path: Path) -> None:
    path = write_logs(tmp_path, [("u1", "A", 0), ("u1", "B", 7 * DAY + 1)])
    assert pairs(path).height == 0
    assert pairs(path, window="7d1s").height == 1


def test_equal_timestamps_count_both_ways(tmp_path: Path) -> None:
    path = write_logs(tmp_path, [("u1", "A", 100), ("u1", "B", 100)])
    assert_frame_equal(pairs(path), expected([("A", "B", 1.0, 1), ("B", "A", 1.0, 1)]))


def test_a_note_never_pairs_with_itself(tmp_path: Path) -> None:
    path = write_logs(tmp_path, [("u1", "A", 0), ("u1", "A", 10), ("u1", "A", 10)])
    assert pairs(path).height == 0


def test_a_user_counts_once_per_ordered_pair_despite_repeats(tmp_path: Path) -> None:
    rows = [("u1", "A", 0), ("u1", "B", 10), ("u1", "A", 20), ("u1", "B", 30), ("u2", "A", 0), ("u2", "B", 5)]
    # u1 also co-views (B, A) through B@10 -> A@20; u2 only (A, B).
    assert_frame_equal(pairs(write_logs(tmp_path, rows)), expected([("A", "B", 2.0, 1), ("B", "A", 1.0, 1)]))


def test_weighting_users_vs_inverse_activity(tmp_path: Path) -> None:
    # u1 viewed 2 distinct notes (adds 1/2), u2 viewed 3 (adds 1/3), u3 viewed 4 (adds 1/4).
    rows = [("u1", "A", 0), ("u1", "B", 1)]
    rows += [("u2", "A", 0), ("u2", "B", 1), ("u2", "C", 2 * DAY)]
    rows += [("u3", "D", 0), ("u3", "E", 0), ("u3", "A", 1), ("u3", "B", 2), ("u3", "A", 3)]
    path = write_logs(tmp_path, rows)
    users = pairs(path).filter(query_id="A", target_id="B")
    inverse = pairs(path, weighting="inverse-activity").filter(query_id="A", target_id="B")
    assert users["score"].to_list() == [3.0]
    assert inverse["score"].to_list() == pytest.approx([1 / 2 + 1 / 3 + 1 / 4], abs=1e-9)


def test_min_and_max_score_drop_pairs_and_are_counted(tmp_path: Path) -> None:
    # (A, B) by three users, (A, C) by two, (A, D) by one.
    rows = []
    for u, notes in {"u1": "ABCD", "u2": "ABC", "u3": "AB"}.items():
        rows += [(u, n, i) for i, n in enumerate(notes)]
    path = write_logs(tmp_path, rows)
    got = pairs(path, min_score=2, max_score=2).filter(query_id="A")
    assert_frame_equal(got, expected([("A", "C", 2.0, 1)]))
    counts = mine_pairs(path, split=(1, 0, 0), weighting="users", min_score=2, max_score=2).summary["counts"]
    # Pairs scoring 1: A-D, B-D, C-D (u1); scoring 3: A-B.
    assert (counts["dropped_min_score"], counts["dropped_max_score"]) == (3, 1)


def test_top_k_orders_by_score_then_target_id(tmp_path: Path) -> None:
    # From A: C and B tie at 2 users, D has 3, E has 1.
    rows = []
    for u, notes in {"u1": "ADCB", "u2": "ADBC", "u3": "ADE"}.items():
        rows += [(u, n, i) for i, n in enumerate(notes)]
    path = write_logs(tmp_path, rows)
    got = pairs(path, top_k=3).filter(query_id="A")
    assert_frame_equal(got, expected([("A", "D", 3.0, 1), ("A", "B", 2.0, 2), ("A", "C", 2.0, 3)]))
    result = mine_pairs(path, split=(1, 0, 0), weighting="users", top_k=1)
    assert result.pairs["train"].filter(query_id="A")["target_id"].to_list() == ["D"]
    assert result.pairs["train"].filter(query_id="D")["target_id"].to_list() == ["B"]  # tie B/C at 2


def test_cap_keeps_each_users_most_recent_events(tmp_path: Path) -> None:
    rows = [("bot", n, i) for i, n in enumerate("ABCDE")] + [("u2", "A", 0), ("u2", "B", 1)]
    path = write_logs(tmp_path, rows)
    result = mine_pairs(path, split=(1, 0, 0), weighting="users", max_events_per_user=2)
    # The bot keeps D@3 and E@4 only; u2 is under the cap.
    assert_frame_equal(result.pairs["train"], expected([("A", "B", 1.0, 1), ("D", "E", 1.0, 1)]))
    assert result.summary["counts"]["users_capped"] == 1
    assert result.summary["counts"]["events_dropped_by_cap"] == 3
    uncapped = mine_pairs(path, split=(1, 0, 0), max_events_per_user=0)
    assert uncapped.summary["counts"]["users_capped"] == 0
    assert uncapped.pairs["train"].height == 10


def test_split_is_by_note_and_never_leaks(tmp_path: Path) -> None:
    rng = random.Random(0)
    notes = [f"n{i:03d}" for i in range(60)]
    rows = [(f"u{u}", rng.choice(notes), rng.randrange(3 * DAY)) for u in range(40) for _ in range(12)]
    path = write_logs(tmp_path, rows)
    result = mine_pairs(path, split=(0.5, 0.25, 0.25), weighting="users", top_k=1000, seed=7)
    everything = pairs(path)
    truth = dict(zip(notes, assign_splits(notes, (0.5, 0.25, 0.25), seed=7), strict=True))
    seen: dict[str, str] = {}
    kept = 0
    for i, (name, df) in enumerate(result.pairs.items()):
        assert df.height > 0, name
        kept += df.height
        for q, t in df.select("query_id", "target_id").iter_rows():
            assert truth[q] == truth[t] == i
            for note in (q, t):
                assert seen.setdefault(note, name) == name
    cross = sum(truth[q] != truth[t] for q, t in everything.select("query_id", "target_id").iter_rows())
    assert kept + cross == everything.height
    assert result.summary["counts"]["dropped_cross_split"] == cross


def test_zero_shares_are_allowed(tmp_path: Path) -> None:
    rows = [(f"u{i % 5}", f"n{i % 17}", i * 60) for i in range(200)]
    path = write_logs(tmp_path, rows)
    train_only = mine_pairs(path, split="1,0,0", top_k=1000)
    assert train_only.pairs["val"].height == train_only.pairs["test"].height == 0
    assert train_only.summary["counts"]["dropped_cross_split"] == 0
    no_val = mine_pairs(path, split="0.5,0,0.5", top_k=1000)
    assert no_val.pairs["val"].height == 0
    assert no_val.pairs["train"].height > 0 and no_val.pairs["test"].height > 0


def test_integer_epochs_csv_globs_renamed_columns_and_event_filter(tmp_path: Path) -> None:
    base = 1_700_000_000
    pl.DataFrame(
        {"who": ["u1", "u1", "u1"], "item": ["A", "B", "C"], "when": [base, base + 10, base + 20]}
    ).write_csv(tmp_path / "a.csv")
    pl.DataFrame(
        {
            "who": ["u2", "u2", "u2"],
            "item": ["A", "B", "C"],
            "when": [base * 1000, (base + 10) * 1000, (base + 8 * DAY) * 1000],
            "kind": ["view", "view", "view"],
        }
    ).write_parquet(tmp_path / "b.parquet")
    common = {"user_col": "who", "note_col": "item", "ts_col": "when", "weighting": "users"}
    seconds = pairs(tmp_path / "a.csv", **common)
    assert_frame_equal(seconds, expected([("A", "B", 1.0, 1), ("A", "C", 1.0, 2), ("B", "C", 1.0, 1)]))
    millis = pairs(tmp_path / "*.parquet", ts_unit="ms", **common)
    assert_frame_equal(millis, expected([("A", "B", 1.0, 1)]))  # C is 8 days later

    pl.DataFrame(
        {
            "who": ["u3"] * 3,
            "item": ["A", "B", "C"],
            "when": [base, base + 1, base + 2],
            "kind": ["view", "like", "view"],
        }
    ).write_parquet(tmp_path / "c.parquet")
    filtered = mine_pairs(
        tmp_path / "c.parquet", split=(1, 0, 0), event_col="kind", events=["view"], **common
    )
    assert_frame_equal(filtered.pairs["train"], expected([("A", "C", 1.0, 1)]))
    assert filtered.summary["counts"]["dropped_event_filter"] == 1


def test_null_ids_and_timestamps_are_dropped_and_counted(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "user_id": ["u1", "u1", None, "u1", "u1"],
            "note_id": ["A", "B", "C", None, "D"],
            "ts": [T0, T0, T0, T0, None],
        },
        schema={"user_id": pl.Utf8, "note_id": pl.Utf8, "ts": pl.Datetime("us")},
    )
    df.write_parquet(tmp_path / "l.parquet")
    result = mine_pairs(tmp_path / "l.parquet", split=(1, 0, 0), weighting="users")
    c = result.summary["counts"]
    assert (c["rows_read"], c["dropped_null_user"], c["dropped_null_note"], c["dropped_null_ts"]) == (
        5,
        1,
        1,
        1,
    )
    assert_frame_equal(result.pairs["train"], expected([("A", "B", 1.0, 1), ("B", "A", 1.0, 1)]))


def reference(rows: list[tuple[str, str, int]], window: int, weighting: str, top_k: int) -> pl.DataFrame:
    """The definition, written out naively: every pair of one user's views."""
    views: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for u, n, t in rows:
        views[u].append((n, t))
    score: dict[tuple[str, str], float] = defaultdict(float)
    for events in views.values():
        n_u = len({n for n, _ in events})
        co = {
            (a, b)
            for (a, ta), (b, tb) in itertools.product(events, events)
            if a != b and 0 <= tb - ta <= window
        }
        for pair in co:
            score[pair] += 1.0 if weighting == "users" else 1.0 / n_u
    out = []
    by_query: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (q, t), s in score.items():
        by_query[q].append((t, round(s, 9)))
    for q in sorted(by_query):
        ranked = sorted(by_query[q], key=lambda ts: (-ts[1], ts[0]))[:top_k]
        out += [(q, t, s, r) for r, (t, s) in enumerate(ranked, start=1)]
    return expected(out)


@pytest.mark.parametrize("weighting", ["users", "inverse-activity"])
@pytest.mark.parametrize("chunk_rows", [1, 50, 10_000_000])
def test_matches_the_naive_definition_on_random_logs(tmp_path: Path, weighting: str, chunk_rows: int) -> None:
    rng = random.Random(f"{weighting}-{chunk_rows}")
    rows = [
        (f"u{rng.randrange(25)}", f"n{rng.randrange(30):02d}", rng.randrange(0, 4 * 3600, 60))
        for _ in range(600)
    ]
    path = write_logs(tmp_path, rows)
    got = mine_pairs(
        path,
        split=(1, 0, 0),
        window="30m",
        weighting=weighting,
        top_k=5,
        max_events_per_user=0,
        chunk_rows=chunk_rows,
    )
    assert_frame_equal(got.pairs["train"], reference(rows, 1800, weighting, 5))


def test_durations_round_trip() -> None:
    assert parse_duration("7d") == 7 * DAY * 10**6
    assert parse_duration("1d12h") == 36 * 3600 * 10**6
    assert parse_duration("90s") == parse_duration("1m30s")
    assert parse_duration("500ms") == 500_000
    assert format_duration(parse_duration("1d12h")) == "1d12h"
    for bad in ("", "7", "7 days", "d7", "-1d"):
        with pytest.raises(UserError, match="not a duration"):
            parse_duration(bad)


def test_missing_column_names_it_and_the_columns_found(tmp_path: Path) -> None:
    pl.DataFrame({"user": ["u"], "note_id": ["A"], "ts": [1]}).write_parquet(tmp_path / "l.parquet")
    with pytest.raises(UserError, match=r"lacks column\(s\) 'user_id'; found user, note_id, ts"):
        mine_pairs(tmp_path / "l.parquet")


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    write_logs(tmp_path, [("u1", "A", 0)], name="good.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(UserError, match=r"cannot read log file .*bad\.parquet"):
        mine_pairs(tmp_path)


def test_no_logs_and_bad_options_are_user_errors(tmp_path: Path) -> None:
    path = write_logs(tmp_path, [("u1", "A", 0), ("u1", "B", 1)])
    cases = [
        ({"logs": tmp_path / "nope"}, "logs not found"),
        ({"weighting": "clicks"}, "expected one of users, inverse-activity"),
        ({"split": "0.9,0.1"}, "three non-negative shares"),
        ({"top_k": 0}, "at least 1"),
        ({"ts_unit": "min"}, "expected one of s, ms, us, ns"),
        ({"events": ["view"]}, "needs --event-col"),
        ({"min_score": 3, "max_score": 1}, "above --max-score"),
    ]
    for opts, message in cases:
        kwargs = {"logs": path, **opts}
        with pytest.raises(UserError, match=message):
            mine_pairs(**kwargs)  # type: ignore[arg-type]


def test_write_is_atomic_and_keeps_previous_output_on_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_logs(tmp_path, [("u1", "A", 0), ("u1", "B", 1), ("u2", "B", 0), ("u2", "C", 5)])
    out = tmp_path / "pairs"
    first = mine_pairs(path, split=(1, 0, 0), weighting="users")
    write_pairs(first, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {
        "train.parquet",
        "val.parquet",
        "test.parquet",
        "notes_split.parquet",
        "summary.json",
    }

    second = mine_pairs(path, split=(0, 0, 1), weighting="users")
    real = pipeline.mine.write_pair_file

    def crash_on_test(frames: object, file: Path) -> None:
        if Path(file).name == "test.parquet":
            raise OSError("disk full")
        real(frames, file)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.mine, "write_pair_file", crash_on_test)
    with pytest.raises(OSError, match="disk full"):
        write_pairs(second, out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pairs")] == []
    write_pairs(second, out)
    assert pl.read_parquet(out / "test.parquet").height == 2


def test_text_and_millisecond_timestamps(tmp_path: Path) -> None:
    (tmp_path / "text.csv").write_text(
        "user_id,note_id,ts\nu1,A,2024-01-01T00:00:00\nu1,B,2024-01-08T00:00:00\nu1,C,not a time\n"
    )
    result = mine_pairs(tmp_path / "text.csv", split=(1, 0, 0), weighting="users")
    assert_frame_equal(result.pairs["train"], expected([("A", "B", 1.0, 1)]))
    assert result.summary["counts"]["dropped_null_ts"] == 0  # not a null: a string that is no date
    assert result.summary["counts"]["dropped_unparsed_ts"] == 1
    assert result.summary["examples"]["unparsed_ts"] == ["not a time"]

    pl.DataFrame(
        {"user_id": ["u1", "u1"], "note_id": ["A", "B"], "ts": [T0, T0 + timedelta(milliseconds=1)]},
        schema={"user_id": pl.Utf8, "note_id": pl.Utf8, "ts": pl.Datetime("ms", "UTC")},
    ).write_parquet(tmp_path / "ms.parquet")
    assert pairs(tmp_path / "ms.parquet", window="1ms").height == 1
    assert pairs(tmp_path / "ms.parquet", window="999us").height == 0


def test_progress_reports_each_stage(tmp_path: Path) -> None:
    path = write_logs(tmp_path, [("u1", "A", 0), ("u1", "B", 1), ("u2", "C", 0), ("u2", "A", 1)])
    seen: list[tuple[str, int, int | None]] = []
    mine_pairs(path, chunk_rows=1, progress=lambda stage, done, total: seen.append((stage, done, total)))
    stages = [s for s, _, _ in seen]
    assert stages[0] == "reading logs" and "co-viewing" in stages
    last = [x for x in seen if x[0] == "co-viewing"][-1]
    assert last[1] == last[2] and last[2] >= 2  # chunk_rows=1 forces several chunks


@pytest.mark.parametrize("weighting", ["users", "inverse-activity"])
def test_packed_and_polars_rank_orders_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weighting: str
) -> None:
    rng = random.Random(weighting)
    rows = [
        (f"u{rng.randrange(40)}", f"n{rng.randrange(25):02d}", rng.randrange(0, 7200, 30)) for _ in range(800)
    ]
    path = write_logs(tmp_path, rows)
    opts = {"split": (0.5, 0.5, 0), "window": "20m", "weighting": weighting, "top_k": 4, "chunk_rows": 300}
    packed = mine_pairs(path, **opts)  # type: ignore[arg-type]
    monkeypatch.setattr("pipeline.mine._PACK_BITS", 0)  # force the multi-column sort
    sorted_ = mine_pairs(path, **opts)  # type: ignore[arg-type]
    for split in ("train", "val"):
        assert packed.pairs[split].height > 0
        assert_frame_equal(packed.pairs[split], sorted_.pairs[split])
    assert packed.summary["counts"] == sorted_.summary["counts"]


def hot_note_logs(tmp_path: Path) -> tuple[Path, list[tuple[str, str, int]]]:
    """Logs where one note ("hot") is co-viewed with most others by most users."""
    rng = random.Random("hot")
    rows = []
    for u in range(30):
        rows += [(f"u{u}", "hot", rng.randrange(0, 3600))]
        rows += [(f"u{u}", f"n{rng.randrange(40):02d}", rng.randrange(0, 3600)) for _ in range(8)]
    return write_logs(tmp_path, rows), rows


@pytest.mark.parametrize("weighting", ["users", "inverse-activity"])
def test_many_partitions_give_the_same_output_as_one(tmp_path: Path, weighting: str) -> None:
    path, rows = hot_note_logs(tmp_path)
    opts = {"split": (0.6, 0.2, 0.2), "window": "30m", "weighting": weighting, "top_k": 3}
    one = mine_pairs(path, **opts)  # type: ignore[arg-type]
    many = mine_pairs(path, chunk_rows=20, **opts)  # type: ignore[arg-type]
    assert one.summary["engine"]["partitions"] == 1
    # 20 candidate rows per partition: the hot note alone is cut again by target note.
    assert many.summary["engine"]["partitions"] > one.summary["counts"]["notes"]
    # A partition exceeds 20 rows only as far as one (query, target) note pair's rows do.
    assert (
        many.summary["engine"]["largest_partition_rows"]
        < 40
        < one.summary["engine"]["largest_partition_rows"]
    )
    for split in ("train", "val", "test"):
        assert_frame_equal(many.pairs[split], one.pairs[split])
    assert many.summary["counts"] == one.summary["counts"]
    everything = mine_pairs(path, chunk_rows=7, **{**opts, "split": (1, 0, 0), "top_k": 5})  # type: ignore[arg-type]
    assert_frame_equal(everything.pairs["train"], reference(rows, 1800, weighting, 5))


def test_memory_limit_sizes_the_partitions_and_refuses_what_cannot_fit(tmp_path: Path) -> None:
    path, _ = hot_note_logs(tmp_path)
    result = mine_pairs(path, memory_limit="4GB")
    assert result.summary["engine"]["memory_limit_bytes"] == 4 * 2**30
    assert result.summary["engine"]["chunk_rows"] == 8_000_000
    now = resident_bytes()
    # Just above what is resident: no room for a partition of the minimum size.
    with pytest.raises(UserError, match=r"--memory-limit .* raise --memory-limit, or mine on Spark"):
        mine_pairs(path, memory_limit=now + 2**16)
    with pytest.raises(UserError, match="too small for 270 log rows"):
        mine_pairs(path, memory_limit="1MB")
    assert parse_memory("512MB") == 512 * 2**20
    assert parse_memory("1.5g") == 3 * 2**29
    for bad in ("lots", "4 parsecs", "0GB", "-1GB"):
        with pytest.raises(UserError, match="--memory-limit"):
            parse_memory(bad)


def _epochs(tmp_path: Path, values: list[int]) -> Path:
    path = tmp_path / "epochs.parquet"
    pl.DataFrame(
        {"user_id": ["u1"] * len(values), "note_id": list("ABC")[: len(values)], "ts": values}
    ).write_parquet(path)
    return path


def test_epochs_in_the_wrong_unit_are_refused_with_numbers(tmp_path: Path) -> None:
    base = 1_700_000_000  # 2023-11-14 in seconds
    millis = _epochs(tmp_path, [base * 1000, base * 1000 + 5_000])
    message = (
        r"epochs 1,700,000,000,000 to 1,700,000,005,000, which in --ts-unit s would be the year 55,8\d\d; "
        r"they look like ms \(year 2023\): pass --ts-unit ms"
    )
    with pytest.raises(UserError, match=message):
        mine_pairs(millis)
    assert pairs(millis, ts_unit="ms").height == 1

    nanos = _epochs(tmp_path, [base * 10**9, base * 10**9 + 5 * 10**9])
    with pytest.raises(UserError, match=r"look like ns \(year 2023\): pass --ts-unit ns"):
        mine_pairs(nanos, ts_unit="ms")
    assert pairs(nanos, ts_unit="ns", window="5s").height == 1
    assert pairs(nanos, ts_unit="ns", window="4s").height == 0


def test_a_window_longer_than_the_logs_does_not_overflow(tmp_path: Path) -> None:
    path = write_logs(tmp_path, [("u1", "A", 0), ("u1", "B", 50 * DAY), ("u2", "B", 0), ("u2", "C", 5)])
    assert_frame_equal(pairs(path, window="100000000w"), pairs(path, window="60d"))
    assert pairs(path, window="100000000w").height == 2


@pytest.mark.parametrize("split", ["nan,0,0", "inf,1,1", "1,nan,0", "-1,1,1"])
def test_split_must_be_finite_shares(tmp_path: Path, split: str) -> None:
    path = write_logs(tmp_path, [("u1", "A", 0), ("u1", "B", 1)])
    with pytest.raises(UserError, match="not three non-negative shares"):
        mine_pairs(path, split=split)


def test_notes_split_lists_every_logged_note_with_its_split(tmp_path: Path) -> None:
    """notes_split.parquet: every note in the logs, pairs or not, in the split that the
    pairs use (a pair's two notes are both in its split)."""
    rows = [(f"u{i % 7}", f"N{i % 40:02d}", i * 30) for i in range(300)]
    rows.append(("lonely", "ALONE", 0))  # viewed once: no pair at all
    path = write_logs(tmp_path, rows)
    result = mine_pairs(path, split=(0.5, 0.2, 0.3), weighting="users", window="10m")
    write_pairs(result, tmp_path / "pairs")
    splits = pl.read_parquet(tmp_path / "pairs" / "notes_split.parquet")
    assert splits.columns == ["note_id", "split"]
    assert splits["note_id"].to_list() == sorted({r[1] for r in rows})
    assert dict(zip(splits["note_id"], splits["split"], strict=True))["ALONE"] in ("train", "val", "test")
    of = dict(zip(splits["note_id"], splits["split"], strict=True))
    for name, df in result.pairs.items():
        assert all(
            of[q] == name and of[t] == name for q, t in zip(df["query_id"], df["target_id"], strict=True)
        )
    assert set(splits["split"]) == {"train", "val", "test"}
