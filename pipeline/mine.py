"""Mine related-note pairs from view logs (co-views within a time window).

Semantics (each pinned by a test):

- A user co-views (A, B) when they viewed A at t_a and B at t_b with
  0 <= t_b - t_a <= window and A != B. Direction matters; equal timestamps count both
  ways; the window edge counts. A user counts at most once per ordered pair.
- Weighting: "users" scores a pair by the number of users who co-viewed it;
  "inverse-activity" (the NoteLLM recipe) lets each user add 1 / N_u, N_u being the
  number of distinct notes that user viewed (after filters and the per-user cap).
- `max_events_per_user` keeps each user's most recent N events (0 = no cap): one bot
  with 100k views would otherwise produce 10^10 candidate pairs.
- Pairs outside [min_score, max_score] are dropped, then pairs whose notes fall in
  different splits (see `pipeline.splits`), then each query keeps its `top_k` targets
  ordered by (score desc, target id asc); `rank` starts at 1.

How: Polars (streaming engine) reads, filters and dictionary-encodes the logs into
compact integer events sorted by (user, time), 16 bytes per event. For each event, the
partners in its window form one contiguous run of that user's sorted events, found with
one `searchsorted`. Runs are expanded in partitions of *query notes* (about `chunk_rows`
candidate rows each): pairs with different query notes never meet, so each partition is
final on its own. A query note popular enough to exceed a partition alone is cut again by
*target note* (each pair is still scored whole in one partition; each keeps its top-k per
query, and the union of those holds the overall top-k). So memory is bounded by the
event table, one partition and the top-k output, never by the quadratic number of
co-views; `memory_limit` sizes the partitions, and logs whose event table alone would
not fit are refused before loading. Within a partition, one sort of packed uint64
(query, target, user) keys deduplicates users and groups pairs, and one sort of packed
(query, score, target) keys ranks them; numpy sorts plain uint64 values several times
faster than any argsort. Inverse-activity weights are summed in fixed point (2^-40), so
scores are exact and identical whatever the partitioning or thread schedule, then
rounded to 9 decimals.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from core.contracts import NOTES_SPLIT_FILE, SPLITS
from core.errors import UserError
from core.outputs import check_output_dir, output_dir
from pipeline.logs import find_log_files, format_duration, parse_duration, scan_logs
from pipeline.options import DEFAULT_MAX_EVENTS_PER_USER, DEFAULT_MEMORY_LIMIT, WEIGHTINGS
from pipeline.splits import assign_splits, parse_split

# Bytes of memory per unit, measured on the expansion and load code paths (with headroom):
_ROW_BYTES = 64  # per candidate (query event, target event) row of one partition
_EVENT_BYTES = 120  # per log row while loading (the streaming dictionary join, then the sort)
_PAIR_BYTES = 96  # per output pair (ranked arrays, then the id strings)
_MIN_CHUNK_ROWS = 10_000
# Larger partitions are no faster (sorts leave the cache): the cap when memory allows more.
_MAX_CHUNK_ROWS = 8_000_000
_FIXED = 2.0**40  # fixed-point scale for summing 1 / N_u exactly
SCORE_DECIMALS = 9
_PACK_BITS = 64  # a sort key of (query, score, target) must fit in this many bits
_DROPS = ("dropped_min_score", "dropped_max_score", "dropped_cross_split", "dropped_top_k")

# progress(stage, done, total): total None for a stage without a known length.
Progress = Callable[[str, int, int | None], None]


@dataclass
class MineResult:
    """Per-split pairs (`query_id, target_id, score, rank`) and the run summary.

    A split's pairs are a frame, or (from the Spark engine) Parquet part files whose
    concatenation in list order is the split, already in (query_id, rank) order.
    """

    pairs: Mapping[str, pl.DataFrame | list[Path]]
    summary: dict[str, Any] = field(default_factory=dict)
    # The split of every note seen in the logs (`note_id, split`, sorted by note id),
    # pairs or not; None from an engine that does not produce it.
    note_splits: pl.DataFrame | None = None


def _noop(stage: str, done: int, total: int | None) -> None:
    return None


def mine_pairs(
    logs: str | Path,
    *,
    user_col: str = "user_id",
    note_col: str = "note_id",
    ts_col: str = "ts",
    ts_unit: str = "s",
    event_col: str | None = None,
    events: Sequence[str] | None = None,
    window: str = "7d",
    weighting: str = "inverse-activity",
    min_score: float | None = None,
    max_score: float | None = None,
    top_k: int = 10,
    max_events_per_user: int = DEFAULT_MAX_EVENTS_PER_USER,
    split: str | Sequence[float] = (0.9, 0.05, 0.05),
    seed: int = 0,
    memory_limit: str | int = DEFAULT_MEMORY_LIMIT,
    chunk_rows: int | None = None,
    progress: Progress | None = None,
) -> MineResult:
    """Mine co-view pairs from the logs at `logs`; see the module docstring for semantics."""
    t0 = time.perf_counter()
    report = progress or _noop
    window_us = parse_duration(window)
    shares = parse_split(split)
    limit = parse_memory(memory_limit)
    _check_options(weighting, min_score, max_score, top_k, max_events_per_user, events, event_col)

    files = find_log_files(logs)
    lf = scan_logs(
        files, user_col=user_col, note_col=note_col, ts_col=ts_col, ts_unit=ts_unit, event_col=event_col
    )
    report("reading logs", 0, None)
    ev, counts = _load_events(lf, events if event_col else None, limit)
    report("reading logs", 1, 1)

    ev, capped_users, capped_events = _cap(ev, max_events_per_user)
    counts["events_dropped_by_cap"] = capped_events
    counts["users_capped"] = capped_users

    users = ev["u"].to_numpy()
    notes = ev["n"].to_numpy()
    ts = ev["t"].to_numpy()
    del ev
    note_ids: list[str] = counts.pop("_note_ids")
    unparsed_examples: list[str] = counts.pop("_unparsed_ts_examples")
    scoring = _Scoring(
        weight=_user_weights(users, notes, weighting),
        split=assign_splits(note_ids, shares, seed),
        weighting=weighting,
        min_score=min_score,
        max_score=max_score,
        top_k=top_k,
        n_users=int(users.max()) + 1,
        n_notes=len(note_ids),
    )
    j_lo, cand = _partner_runs(users, ts, window_us)
    del ts
    rows = chunk_rows or plan_chunk_rows(limit, len(users), scoring.n_notes, top_k)
    by_note = np.argsort(notes, kind="stable")
    note_start = np.r_[0, np.cumsum(np.bincount(notes, minlength=scoring.n_notes))]
    part = _Partitioner(users, notes, j_lo, cand, by_note, note_start, rows)
    ranges = _query_ranges(np.bincount(notes, weights=cand, minlength=scoring.n_notes), rows, scoring.n_users)
    for key in ("user_pairs", "distinct_pairs", *_DROPS):
        counts[key] = 0
    engine = {"name": "polars", "memory_limit_bytes": limit, "chunk_rows": rows}
    engine.update(partitions=0, largest_partition_rows=0)
    parts = []
    for c, (q_lo, q_hi) in enumerate(ranges):
        report("co-viewing", c, len(ranges))
        parts.append(_range_pairs(q_lo, q_hi, part, scoring, counts, engine))
    report("co-viewing", len(ranges), len(ranges))
    ids = pl.Series("id", note_ids, dtype=pl.Utf8)
    ranked = pl.concat(parts)
    pairs = ranked.select(
        ids.gather(ranked["q"]).alias("query_id"),
        ids.gather(ranked["t"]).alias("target_id"),
        "score",
        "rank",
        "split",
    )
    per_split = {name: pairs.filter(pl.col("split") == i).drop("split") for i, name in enumerate(SPLITS)}
    params = mining_params(
        user_col=user_col,
        note_col=note_col,
        ts_col=ts_col,
        ts_unit=ts_unit,
        event_col=event_col,
        events=events,
        window_us=window_us,
        weighting=weighting,
        min_score=min_score,
        max_score=max_score,
        top_k=top_k,
        max_events_per_user=max_events_per_user,
        shares=shares,
        seed=seed,
    )
    splits = {
        name: {"pairs": df.height, "queries": df["query_id"].n_unique()} for name, df in per_split.items()
    }
    examples = {"unparsed_ts": unparsed_examples}
    summary = make_summary(logs, files, params, counts, engine, splits, time.perf_counter() - t0, examples)
    note_splits = pl.DataFrame(
        {"note_id": ids, "split": pl.Series(SPLITS, dtype=pl.Utf8).gather(scoring.split.astype(np.int64))}
    )
    return MineResult(pairs=per_split, summary=summary, note_splits=note_splits)


COUNT_KEYS = (
    "rows_read",
    "dropped_event_filter",
    "dropped_null_user",
    "dropped_null_note",
    "dropped_null_ts",
    "dropped_unparsed_ts",
    "duplicate_events",
    "events",
    "users",
    "notes",
    "events_dropped_by_cap",
    "users_capped",
    "user_pairs",
    "distinct_pairs",
    *_DROPS,
)


def mining_params(
    *,
    user_col: str,
    note_col: str,
    ts_col: str,
    ts_unit: str,
    event_col: str | None,
    events: Sequence[str] | None,
    window_us: int,
    weighting: str,
    min_score: float | None,
    max_score: float | None,
    top_k: int,
    max_events_per_user: int,
    shares: Sequence[float],
    seed: int,
) -> dict[str, Any]:
    """The job's parameters as summary.json records them, one builder for every engine
    (so two engines given the same options write the same `parameters`)."""
    return {
        "user_col": user_col,
        "note_col": note_col,
        "ts_col": ts_col,
        "ts_unit": ts_unit,
        "event_col": event_col,
        "events": list(events) if events and event_col else None,
        "window_us": window_us,
        "weighting": weighting,
        "min_score": min_score,
        "max_score": max_score,
        "top_k": top_k,
        "max_events_per_user": max_events_per_user,
        "split": list(shares),
        "seed": seed,
    }


def make_summary(
    logs: str | Path,
    files: Sequence[str | Path],
    params: dict[str, Any],
    counts: dict[str, Any],
    engine: dict[str, Any],
    splits: dict[str, dict[str, int]],
    seconds: float,
    examples: dict[str, list[str]],
) -> dict[str, Any]:
    """summary.json, the same layout for every engine (`engine` holds what differs)."""
    params = {**params, "window": format_duration(params["window_us"])}
    order = ["user_col", "note_col", "ts_col", "ts_unit", "event_col", "events", "window", "window_us"]
    return {
        "inputs": {"logs": str(logs), "files": [str(f) for f in files]},
        "parameters": {k: params[k] for k in order} | {k: v for k, v in params.items() if k not in order},
        "counts": {k: counts[k] for k in COUNT_KEYS if k in counts}
        | {k: v for k, v in counts.items() if k not in COUNT_KEYS},
        "engine": engine,
        "examples": examples,
        "splits": splits,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
    }


PAIRS_SCHEMA = pa.schema(
    [("query_id", pa.string()), ("target_id", pa.string()), ("score", pa.float64()), ("rank", pa.int32())]
)
PAIRS_ROW_GROUP = 1 << 20


def write_pair_file(frames: Iterable[pl.DataFrame], path: Path) -> None:
    """Write pair frames, concatenated, as one Parquet file in row groups of fixed size.

    The bytes depend only on the rows: every engine writes through here, so the same
    pairs give the same file however they were produced or batched.
    """
    buffered: list[pa.Table] = []
    held = 0
    with pq.ParquetWriter(path, PAIRS_SCHEMA, compression="zstd") as writer:
        for frame in frames:
            buffered.append(frame.select(PAIRS_SCHEMA.names).to_arrow().cast(PAIRS_SCHEMA))
            held += buffered[-1].num_rows
            while held >= PAIRS_ROW_GROUP:
                whole = pa.concat_tables(buffered).combine_chunks()
                writer.write_table(whole.slice(0, PAIRS_ROW_GROUP), row_group_size=PAIRS_ROW_GROUP)
                buffered, held = [whole.slice(PAIRS_ROW_GROUP)], whole.num_rows - PAIRS_ROW_GROUP
        if held:
            writer.write_table(pa.concat_tables(buffered).combine_chunks(), row_group_size=PAIRS_ROW_GROUP)


def _frames(source: pl.DataFrame | list[Path]) -> Iterator[pl.DataFrame]:
    """A split's pairs as frames, reading part files one row group at a time."""
    if isinstance(source, pl.DataFrame):
        yield source
        return
    for part in source:
        for batch in pq.ParquetFile(part).iter_batches(batch_size=PAIRS_ROW_GROUP):
            yield pl.from_arrow(batch)  # type: ignore[misc]


PAIRS_OUTPUTS = ("train.parquet", "val.parquet", "test.parquet", NOTES_SPLIT_FILE, "summary.json")


def _log_inputs(logs: str | Path) -> list[Path]:
    found = [Path(logs)] if Path(logs).exists() else []
    try:
        return found + find_log_files(logs)
    except UserError:
        return found


def check_pairs_out(out: str | Path, logs: str | Path, *, force: bool = False) -> Path:
    """Refuse an `--out` that `write_pairs` could damage (see `core.outputs`), before mining."""
    return check_output_dir(out, PAIRS_OUTPUTS, label="mine-pairs", inputs=_log_inputs(logs), force=force)


def write_pairs(result: MineResult, out: str | Path, *, force: bool = False) -> Path:
    """Write `{train,val,test}.parquet`, `notes_split.parquet` and `summary.json` into `out`.

    `notes_split.parquet` (`note_id, split`) is the split of every note seen in the logs,
    including notes with no pair: evaluation pools are built from it. Only those five
    files are replaced, each atomically (summary.json last, so it marks a
    complete output); anything else in `out` is left alone. A directory holding other
    files, or one that is or holds the logs, is refused unless `force` (see `core.outputs`).
    """
    import json

    inputs = [Path(f) for f in result.summary.get("inputs", {}).get("files", [])]
    logs = result.summary.get("inputs", {}).get("logs")
    if logs and Path(logs).exists():
        inputs.append(Path(logs))
    with output_dir(
        out, PAIRS_OUTPUTS, label="mine-pairs", inputs=inputs, force=force, last=("summary.json",)
    ) as tmp:
        for name, source in result.pairs.items():
            write_pair_file(_frames(source), tmp / f"{name}.parquet")
        if result.note_splits is not None:
            result.note_splits.write_parquet(tmp / NOTES_SPLIT_FILE)
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    return Path(out)


# --- memory --------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}
_SIZE_UNITS.update({"t": 2**40, "tb": 2**40, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def parse_memory(text: str | int) -> int:
    """'4GB', '512MB', '1.5g', 2**30 -> bytes (binary units: 1 GB = 2^30 bytes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        unit = m.group(2).lower() if m else ""
        if not m or unit not in _SIZE_UNITS:
            raise UserError(f"--memory-limit {text!r} is not a size; expected e.g. 4GB, 512MB or 1.5GB")
        value = round(float(m.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise UserError(f"--memory-limit {text!r} must be positive, e.g. 4GB")
    return value


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _check_event_memory(rows: int, memory_limit: int) -> None:
    """Refuse, before loading, logs whose event table alone would not fit the limit."""
    need = resident_bytes() + rows * _EVENT_BYTES
    if need > memory_limit:
        raise UserError(
            f"--memory-limit {_gb(memory_limit)} is too small for {rows:,} log rows (loading needs about "
            f"{_gb(need)}); raise --memory-limit, or mine on Spark with --engine spark"
        )


def plan_chunk_rows(memory_limit: int, n_events: int, n_notes: int, top_k: int) -> int:
    """Candidate rows per partition so that the process stays under `memory_limit`.

    What is resident now (the event arrays), the output's top-k pairs and one partition
    at `_ROW_BYTES` per candidate row must fit together; partitions larger than
    `_MAX_CHUNK_ROWS` are no faster, so that is the most it gives.
    """
    reserve = resident_bytes() + n_notes * top_k * _PAIR_BYTES
    rows = (memory_limit - reserve) // _ROW_BYTES
    if rows < _MIN_CHUNK_ROWS:
        raise UserError(
            f"--memory-limit {_gb(memory_limit)} leaves no room to mine: {n_events:,} events and the output "
            f"already need about {_gb(reserve)}; raise --memory-limit, or mine on Spark with --engine spark"
        )
    return int(min(rows, _MAX_CHUNK_ROWS))


def _drop_adjacent_repeats(ev: pl.DataFrame) -> pl.DataFrame:
    """Rows of a frame sorted by (u, t, n) without exact repeats."""
    if ev.height < 2:
        return ev
    u, t, n = (ev[c].to_numpy() for c in ("u", "t", "n"))
    new = np.r_[True, (u[1:] != u[:-1]) | (t[1:] != t[:-1]) | (n[1:] != n[:-1])]
    return ev if new.all() else ev.filter(pl.Series(new))


# --- steps ---------------------------------------------------------------------------


def _check_options(
    weighting: str,
    min_score: float | None,
    max_score: float | None,
    top_k: int,
    cap: int,
    events: Sequence[str] | None,
    event_col: str | None,
) -> None:
    if weighting not in WEIGHTINGS:
        raise UserError(f"--weighting {weighting!r} is not known; expected one of {', '.join(WEIGHTINGS)}")
    if top_k < 1:
        raise UserError(f"--top-k {top_k} must be at least 1")
    if cap < 0:
        raise UserError(f"--max-events-per-user {cap} must be >= 0 (0 means no cap)")
    if min_score is not None and max_score is not None and min_score > max_score:
        raise UserError(f"--min-score {min_score} is above --max-score {max_score}; swap or drop one")
    if events and not event_col:
        raise UserError("--events needs --event-col, the column holding the event type (e.g. event)")


def _load_events(
    lf: pl.LazyFrame, events: Sequence[str] | None, memory_limit: int
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Filter, drop nulls (counted), dictionary-encode and sort the events.

    Returns `u` (UInt32, users in sorted order), `n` (UInt32, index into the sorted note
    ids), `t` (Int64 us), unique and sorted by (u, t, n); plus the counts.
    """
    stats = [pl.len().alias("rows_read")]
    if events:
        lf_kept = lf.filter(pl.col("event").is_in(list(events)))
        stats.append(pl.col("event").is_in(list(events)).not_().sum().alias("dropped_event_filter"))
    else:
        lf_kept = lf
    keep = pl.col("event").is_in(list(events)) if events else pl.lit(True)
    valid_ids = keep & pl.col("user").is_not_null() & pl.col("note").is_not_null()
    stats += [
        (keep & pl.col("user").is_null()).sum().alias("dropped_null_user"),
        (keep & pl.col("user").is_not_null() & pl.col("note").is_null()).sum().alias("dropped_null_note"),
        (valid_ids & pl.col("t").is_null() & pl.col("t_bad").is_null()).sum().alias("dropped_null_ts"),
        (valid_ids & pl.col("t_bad").is_not_null()).sum().alias("dropped_unparsed_ts"),
    ]
    examples = lf.filter(valid_ids & pl.col("t_bad").is_not_null()).select("t_bad").unique().head(3)
    clean = lf_kept.drop_nulls(["user", "note", "t"]).select("user", "note", "t")
    note_dict = clean.select("note").unique().sort("note").with_row_index("n")
    user_dict = clean.select("user").unique().sort("user").with_row_index("u")
    try:
        stat_df, notes_df, users_df, bad_df = pl.collect_all(
            [lf.select(stats), note_dict, user_dict, examples], engine="streaming"
        )
        _check_event_memory(int(stat_df["rows_read"][0]), memory_limit)
        # Integers only from here: 16 bytes per event. A hash `unique()` over the three
        # columns would cost ~10x that; sorting then dropping adjacent repeats does not.
        encoded = (
            clean.join(notes_df.lazy(), on="note")
            .join(users_df.lazy(), on="user")
            .select("u", "n", "t")
            .collect(engine="streaming")
            .sort("u", "t", "n")
        )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"cannot read the logs: {first}") from None
    encoded = _drop_adjacent_repeats(encoded)
    counts: dict[str, Any] = {k: int(v) for k, v in stat_df.row(0, named=True).items()}
    counts.setdefault("dropped_event_filter", 0)
    kept_rows = counts["rows_read"] - counts["dropped_event_filter"]
    kept_rows -= counts["dropped_null_user"] + counts["dropped_null_note"]
    kept_rows -= counts["dropped_null_ts"] + counts["dropped_unparsed_ts"]
    counts["duplicate_events"] = kept_rows - encoded.height
    counts["events"] = encoded.height
    counts["users"] = users_df.height
    counts["notes"] = notes_df.height
    counts["_note_ids"] = notes_df["note"].to_list()
    counts["_unparsed_ts_examples"] = sorted(bad_df["t_bad"].to_list())
    if encoded.height == 0:
        unparsed = counts["dropped_unparsed_ts"]
        raise UserError(
            f"no usable events: {counts['rows_read']} row(s) read, all dropped by the event filter, "
            "for null ids/timestamps"
            + (
                f" or for {unparsed:,} timestamps that are not dates (e.g. "
                f"{', '.join(map(repr, counts['_unparsed_ts_examples']))})"
                if unparsed
                else ""
            )
            + "; check --events and the column options"
        )
    return encoded, counts


def _cap(ev: pl.DataFrame, cap: int) -> tuple[pl.DataFrame, int, int]:
    """Keep each user's `cap` most recent events (ties at the cut: higher note index kept)."""
    if cap <= 0:
        return ev, 0, 0
    u = ev["u"].to_numpy()
    starts, lengths = _runs(u)
    over = lengths > cap
    if not over.any():
        return ev, 0, 0
    ends = starts + lengths
    pos_from_end = np.repeat(ends, lengths) - np.arange(len(u)) - 1
    kept = ev.filter(pl.Series(pos_from_end < cap))
    return kept, int(over.sum()), ev.height - kept.height


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.r_[0, change]
    lengths = np.diff(np.r_[starts, len(sorted_keys)])
    return starts.astype(np.int64), lengths.astype(np.int64)


def _user_weights(users: np.ndarray, notes: np.ndarray, weighting: str) -> np.ndarray:
    """Per-user fixed-point weight: 1 ("users") or 1 / N_u ("inverse-activity")."""
    n_users = int(users.max()) + 1
    if weighting == "users":
        return np.ones(n_users, np.int64)
    n_notes = np.uint64(int(notes.max()) + 1)
    key = users.astype(np.uint64) * n_notes + notes
    key.sort()
    distinct = key[np.r_[True, key[1:] != key[:-1]]]
    del key
    per_user = np.bincount((distinct // n_notes).astype(np.int64), minlength=n_users)
    with np.errstate(divide="ignore"):
        return np.where(per_user > 0, np.round(_FIXED / np.maximum(per_user, 1)), 0).astype(np.int64)


def _partner_runs(users: np.ndarray, ts: np.ndarray, window_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Each event's partner run: first partner index `j_lo` and run length `cand`.

    Events are sorted by (user, t, note). The partners j of event i (same user,
    t_i <= t_j <= t_i + window) form one contiguous run [j_lo, j_lo + cand): j_lo is the
    first event of the user at t_i (equal timestamps count both ways), the end comes
    from one searchsorted. Runs include i itself and same-note partners; those are
    dropped when the run is expanded.
    """
    n = len(users)
    idx = np.arange(n, dtype=np.int64)
    new_time = np.r_[True, (users[1:] != users[:-1]) | (ts[1:] != ts[:-1])]
    j_lo = np.maximum.accumulate(np.where(new_time, idx, 0))
    del idx, new_time
    return j_lo, _window_ends(users, ts, window_us) - j_lo


def _query_ranges(per_note_rows: np.ndarray, chunk_rows: int, n_users: int) -> list[tuple[int, int]]:
    """Cut the query notes into ranges of about `chunk_rows` candidate rows each.

    A range whose one note alone has more rows is cut again by target note later
    (`_target_ranges`). Ranges are also narrow enough for the (query, target, user)
    dedup key to fit in 64 bits.
    """
    n_notes = len(per_note_rows)
    max_notes = (2**64 - 1) // (n_notes * n_users)
    if max_notes < 1:
        raise UserError(
            f"{n_notes:,} notes x {n_users:,} users is too large to mine in one run; "
            "mine on Spark with --engine spark"
        )
    cum = np.cumsum(per_note_rows)
    cuts = np.searchsorted(cum, np.arange(chunk_rows, cum[-1], chunk_rows), side="right")
    bounds = sorted({0, n_notes, *(int(c) for c in cuts if 0 < c < n_notes)})
    ranges = []
    for lo, hi in itertools.pairwise(bounds):
        ranges += [(a, min(hi, a + max_notes)) for a in range(lo, hi, max_notes)]
    return ranges


def _window_ends(users: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
    """Exclusive end of each event's window: first index past (u_i, t_i + window).

    One searchsorted over a composite key user * stride + (t - t_min); users are cut into
    blocks small enough that the key cannot overflow int64.
    """
    n = len(users)
    out = np.empty(n, np.int64)
    if n == 0:
        return out
    t_min, t_max = int(ts.min()), int(ts.max())
    window_us = min(window_us, t_max - t_min)  # a longer window sees the same events
    stride = t_max - t_min + window_us + 1
    block_users = max(1, (2**62) // stride)
    u0 = 0
    n_users = int(users[-1]) + 1
    while u0 < n_users:
        u1 = min(n_users, u0 + block_users)
        lo = int(np.searchsorted(users, u0, side="left"))
        hi = int(np.searchsorted(users, u1, side="left"))
        key = (users[lo:hi].astype(np.int64) - u0) * stride + (ts[lo:hi] - t_min)
        out[lo:hi] = np.searchsorted(key, key + window_us, side="right") + lo
        u0 = u1
    return out


@dataclass
class _Scoring:
    """What turns a chunk's co-views into ranked pairs (the same for every chunk)."""

    weight: np.ndarray  # fixed-point weight per user
    split: np.ndarray  # split index per note
    weighting: str
    min_score: float | None
    max_score: float | None
    top_k: int
    n_users: int
    n_notes: int


@dataclass
class _Partitioner:
    """The events indexed by query note, and how many candidate rows fit in memory at once."""

    users: np.ndarray
    notes: np.ndarray
    j_lo: np.ndarray
    cand: np.ndarray
    by_note: np.ndarray  # event indices ordered by note
    note_start: np.ndarray  # by_note[note_start[q]:note_start[q + 1]] are note q's events
    chunk_rows: int

    def events(self, q_lo: int, q_hi: int) -> np.ndarray:
        """The events of query notes [q_lo, q_hi), in event order (for memory locality)."""
        return np.sort(self.by_note[self.note_start[q_lo] : self.note_start[q_hi]])

    def pieces(self, events: np.ndarray) -> list[np.ndarray]:
        """`events` cut into pieces of at most `chunk_rows` candidate rows (one event at least)."""
        cum = np.cumsum(self.cand[events])
        if len(cum) == 0 or cum[-1] <= self.chunk_rows:
            return [events]
        cuts = np.searchsorted(cum, np.arange(self.chunk_rows, cum[-1], self.chunk_rows), side="right")
        bounds = sorted({0, len(events), *(int(c) for c in cuts if 0 < c < len(events))})
        return [events[a:b] for a, b in itertools.pairwise(bounds)]

    def expand(self, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query event, target event) for every candidate row of `events`."""
        run = self.cand[events]
        q_ev = np.repeat(events, run)
        t_ev = np.repeat(self.j_lo[events] - (np.cumsum(run) - run), run)
        t_ev += np.arange(len(q_ev), dtype=np.int64)
        return q_ev, t_ev


def _range_pairs(
    q_lo: int, q_hi: int, part: _Partitioner, sc: _Scoring, stats: dict[str, int], engine: dict[str, Any]
) -> pl.DataFrame:
    """Ranked pairs for the query notes in [q_lo, q_hi).

    Pairs with different query notes never meet, so a query range is final on its own.
    When the range's candidate rows exceed `chunk_rows` (one very popular note), it is
    cut again by target note: each (query, target) pair is still scored whole within one
    target range, each range keeps its own top-k per query, and the union of those
    top-k lists holds the overall top-k. Memory stays bounded by `chunk_rows`.
    """
    events = part.events(q_lo, q_hi)
    pieces = part.pieces(events)
    t_ranges = [(0, sc.n_notes)] if len(pieces) == 1 else _target_ranges(part, pieces, sc.n_notes)
    engine["partitions"] += len(t_ranges)
    kept = 0
    ranked = []
    for t_lo, t_hi in t_ranges:
        keys = [_dedup_keys(part, piece, q_lo, t_lo, t_hi, sc) for piece in pieces]
        key = keys[0] if len(keys) == 1 else np.concatenate(keys)
        del keys
        engine["largest_partition_rows"] = max(engine["largest_partition_rows"], len(key))
        query, units, target = _scored_pairs(key, q_lo, sc, stats)
        kept += len(query)
        ranked.append(_top_k(query, units, target, q_lo, q_hi, sc))
    if len(ranked) == 1:
        query, units, target, rank = ranked[0]
    else:
        query, units, target = (np.concatenate([r[i] for r in ranked]) for i in range(3))
        query, units, target, rank = _top_k(query, units, target, q_lo, q_hi, sc)
    stats["dropped_top_k"] += kept - len(query)
    return pl.DataFrame(
        {
            "q": query,
            "t": target,
            "score": _score(units, sc.weighting),
            "rank": rank.astype(np.int32),
            "split": sc.split[query],
        }
    )


def _target_ranges(part: _Partitioner, pieces: list[np.ndarray], n_notes: int) -> list[tuple[int, int]]:
    """Target-note ranges of about `chunk_rows` candidate rows each, from one counting pass."""
    per_target = np.zeros(n_notes, np.int64)
    for piece in pieces:
        _, t_ev = part.expand(piece)
        per_target += np.bincount(part.notes[t_ev], minlength=n_notes)
    cum = np.cumsum(per_target)
    cuts = np.searchsorted(cum, np.arange(part.chunk_rows, cum[-1], part.chunk_rows), side="right")
    bounds = sorted({0, n_notes, *(int(c) for c in cuts if 0 < c < n_notes)})
    return list(itertools.pairwise(bounds))


def _dedup_keys(
    part: _Partitioner, events: np.ndarray, q_lo: int, t_lo: int, t_hi: int, sc: _Scoring
) -> np.ndarray:
    """Packed (query - q_lo, target, user) uint64 keys of the co-views of `events` whose
    target note lies in [t_lo, t_hi); a note never pairs with itself."""
    q_ev, t_ev = part.expand(events)
    q_note = part.notes[q_ev]
    t_note = part.notes[t_ev]
    del t_ev
    keep = q_note != t_note
    if t_lo > 0 or t_hi < sc.n_notes:
        keep &= (t_note >= t_lo) & (t_note < t_hi)
    key = (q_note[keep] - np.uint32(q_lo)).astype(np.uint64) * np.uint64(sc.n_notes)
    key += t_note[keep]
    key *= np.uint64(sc.n_users)
    key += part.users[q_ev[keep]]
    return key


def _scored_pairs(
    key: np.ndarray, q_lo: int, sc: _Scoring, stats: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dedup users per pair, score each (query, target) pair, apply the score and split filters.

    Returns (query, integer score units, target) of the pairs kept. Scores are integers:
    user counts, or the fixed-point sum in units of 10^-9 (the rounding of the score), so
    that ties are exact and packable into a sort key.
    """
    key.sort()
    if len(key):
        key = key[np.r_[True, key[1:] != key[:-1]]]
    stats["user_pairs"] += len(key)
    pair, user = np.divmod(key, np.uint64(sc.n_users))
    del key
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if len(pair) else np.zeros(0, np.int64)
    n_users = np.diff(np.r_[starts, len(pair)])
    query, target = np.divmod(pair[starts], np.uint64(sc.n_notes))
    query = (query + np.uint64(q_lo)).astype(np.uint32)
    target = target.astype(np.uint32)
    if sc.weighting == "users":
        units = n_users.astype(np.int64)
    else:
        wsum = np.add.reduceat(sc.weight[user], starts) if len(starts) else np.zeros(0, np.int64)
        units = np.rint(wsum / _FIXED * 10.0**SCORE_DECIMALS).astype(np.int64)
    del pair, user
    score = _score(units, sc.weighting)
    stats["distinct_pairs"] += len(units)

    keep = np.ones(len(units), bool)
    if sc.min_score is not None:
        low = score < sc.min_score
        stats["dropped_min_score"] += int(low.sum())
        keep &= ~low
    if sc.max_score is not None:
        high = keep & (score > sc.max_score)
        stats["dropped_max_score"] += int(high.sum())
        keep &= ~high
    cross = keep & (sc.split[query] != sc.split[target])
    stats["dropped_cross_split"] += int(cross.sum())
    keep &= ~cross
    return query[keep], units[keep], target[keep]


def _top_k(
    query: np.ndarray, units: np.ndarray, target: np.ndarray, q_lo: int, q_hi: int, sc: _Scoring
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each query's `top_k` targets by (score desc, target asc), with their rank (from 1)."""
    query, units, target = _rank_order(query, units, target, q_lo, q_hi, sc.n_notes)
    starts, lengths = _runs(query)
    rank = np.arange(len(query)) - np.repeat(starts, lengths) + 1
    top = rank <= sc.top_k
    return query[top], units[top], target[top], rank[top]


def _score(units: np.ndarray, weighting: str) -> np.ndarray:
    """Integer score units -> the float score written out."""
    return units.astype(np.float64) if weighting == "users" else units / 10.0**SCORE_DECIMALS


def _rank_order(
    query: np.ndarray, units: np.ndarray, target: np.ndarray, q_lo: int, q_hi: int, n_notes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder pairs by (query asc, score desc, target asc).

    Fast path: pack the three into one uint64 and sort values (numpy's value sort is
    several times faster than any argsort); when they need more than 64 bits, a Polars
    multi-column sort.
    """
    top_units = int(units.max()) if len(units) else 0
    q_bits = max(1, (q_hi - q_lo - 1).bit_length())
    s_bits = max(1, top_units.bit_length())
    t_bits = max(1, (n_notes - 1).bit_length())
    if q_bits + s_bits + t_bits <= _PACK_BITS:
        key = (query - np.uint32(q_lo)).astype(np.uint64) << np.uint64(s_bits + t_bits)
        key |= (top_units - units).astype(np.uint64) << np.uint64(t_bits)
        key |= target.astype(np.uint64)
        key.sort()
        t_mask, s_mask = np.uint64((1 << t_bits) - 1), np.uint64((1 << s_bits) - 1)
        return (
            (key >> np.uint64(s_bits + t_bits)).astype(np.uint32) + np.uint32(q_lo),
            top_units - ((key >> np.uint64(t_bits)) & s_mask).astype(np.int64),
            (key & t_mask).astype(np.uint32),
        )
    df = pl.DataFrame({"q": query, "s": units, "t": target}).sort(
        ["q", "s", "t"], descending=[False, True, False]
    )
    return df["q"].to_numpy(), df["s"].to_numpy(), df["t"].to_numpy()
