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
one `searchsorted`. Runs are expanded in chunks of *query notes* (about `chunk_rows`
candidate rows each): pairs with different query notes never meet, so each chunk is
final on its own and memory stays bounded by the chunk and the top-k output, not by the
quadratic number of co-views. Within a chunk, one sort of packed uint64
(query, target, user) keys deduplicates users and groups pairs, and one sort of packed
(query, score, target) keys ranks them; numpy sorts plain uint64 values several times
faster than any argsort. Inverse-activity weights are summed in fixed point (2^-40), so
scores are exact and identical whatever the chunking or thread schedule, then rounded
to 9 decimals.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.contracts import SPLITS
from core.errors import UserError
from core.outputs import check_output_dir, output_dir
from pipeline.logs import find_log_files, format_duration, parse_duration, scan_logs
from pipeline.splits import assign_splits, parse_split

WEIGHTINGS = ("users", "inverse-activity")
DEFAULT_MAX_EVENTS_PER_USER = 1000
DEFAULT_CHUNK_ROWS = 8_000_000  # candidate (query, target, user) rows expanded at once (~40 B each)
_FIXED = 2.0**40  # fixed-point scale for summing 1 / N_u exactly
SCORE_DECIMALS = 9
_PACK_BITS = 64  # a sort key of (query, score, target) must fit in this many bits
_DROPS = ("dropped_min_score", "dropped_max_score", "dropped_cross_split", "dropped_top_k")

# progress(stage, done, total): total None for a stage without a known length.
Progress = Callable[[str, int, int | None], None]


@dataclass
class MineResult:
    """Per-split pair frames (`query_id, target_id, score, rank`) and the run summary."""

    pairs: dict[str, pl.DataFrame]
    summary: dict[str, Any] = field(default_factory=dict)


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
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
) -> MineResult:
    """Mine co-view pairs from the logs at `logs`; see the module docstring for semantics."""
    t0 = time.perf_counter()
    report = progress or _noop
    window_us = parse_duration(window)
    shares = parse_split(split)
    _check_options(weighting, min_score, max_score, top_k, max_events_per_user, events, event_col)

    files = find_log_files(logs)
    lf = scan_logs(
        files, user_col=user_col, note_col=note_col, ts_col=ts_col, ts_unit=ts_unit, event_col=event_col
    )
    report("reading logs", 0, None)
    ev, counts = _load_events(lf, events if event_col else None)
    report("reading logs", 1, 1)

    ev, capped_users, capped_events = _cap(ev, max_events_per_user)
    counts["events_dropped_by_cap"] = capped_events
    counts["users_capped"] = capped_users

    users = ev["u"].to_numpy()
    notes = ev["n"].to_numpy()
    ts = ev["t"].to_numpy()
    del ev
    note_ids: list[str] = counts.pop("_note_ids")
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
    j_lo, cand, ranges = _co_views(users, notes, ts, window_us, chunk_rows)
    del ts
    for key in ("user_pairs", "distinct_pairs", *_DROPS):
        counts[key] = 0
    parts = []
    for c, (q_lo, q_hi) in enumerate(ranges):
        report("co-viewing", c, len(ranges))
        parts.append(_chunk_pairs(q_lo, q_hi, users, notes, j_lo, cand, scoring, counts))
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
    summary = {
        "inputs": {"logs": str(logs), "files": [str(f) for f in files]},
        "parameters": {
            "user_col": user_col,
            "note_col": note_col,
            "ts_col": ts_col,
            "ts_unit": ts_unit,
            "event_col": event_col,
            "events": list(events) if events and event_col else None,
            "window": format_duration(window_us),
            "window_us": window_us,
            "weighting": weighting,
            "min_score": min_score,
            "max_score": max_score,
            "top_k": top_k,
            "max_events_per_user": max_events_per_user,
            "split": list(shares),
            "seed": seed,
        },
        "counts": counts,
        "splits": {
            name: {"pairs": df.height, "queries": df["query_id"].n_unique()} for name, df in per_split.items()
        },
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return MineResult(pairs=per_split, summary=summary)


PAIRS_OUTPUTS = ("train.parquet", "val.parquet", "test.parquet", "summary.json")


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
    """Write `{train,val,test}.parquet` and `summary.json` into `out`.

    Only those four files are replaced, each atomically (summary.json last, so it marks a
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
        for name, df in result.pairs.items():
            df.write_parquet(tmp / f"{name}.parquet")
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
    return Path(out)


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


def _load_events(lf: pl.LazyFrame, events: Sequence[str] | None) -> tuple[pl.DataFrame, dict[str, Any]]:
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
    stats += [
        (keep & pl.col("user").is_null()).sum().alias("dropped_null_user"),
        (keep & pl.col("user").is_not_null() & pl.col("note").is_null()).sum().alias("dropped_null_note"),
        (keep & pl.col("user").is_not_null() & pl.col("note").is_not_null() & pl.col("t").is_null())
        .sum()
        .alias("dropped_null_ts"),
    ]
    clean = lf_kept.drop_nulls(["user", "note", "t"]).select("user", "note", "t")
    note_dict = clean.select("note").unique().sort("note").with_row_index("n")
    user_dict = clean.select("user").unique().sort("user").with_row_index("u")
    try:
        stat_df, notes_df, users_df = pl.collect_all(
            [lf.select(stats), note_dict, user_dict], engine="streaming"
        )
        encoded = (
            clean.join(notes_df.lazy(), on="note")
            .join(users_df.lazy(), on="user")
            .select("u", "n", "t")
            .unique()
            .sort("u", "t", "n")
            .collect(engine="streaming")
        )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"cannot read the logs: {first}") from None
    counts: dict[str, Any] = {k: int(v) for k, v in stat_df.row(0, named=True).items()}
    counts.setdefault("dropped_event_filter", 0)
    kept_rows = counts["rows_read"] - counts["dropped_event_filter"]
    kept_rows -= counts["dropped_null_user"] + counts["dropped_null_note"] + counts["dropped_null_ts"]
    counts["duplicate_events"] = kept_rows - encoded.height
    counts["events"] = encoded.height
    counts["users"] = users_df.height
    counts["notes"] = notes_df.height
    counts["_note_ids"] = notes_df["note"].to_list()
    if encoded.height == 0:
        raise UserError(
            f"no usable events: {counts['rows_read']} row(s) read, all dropped by the event filter or "
            "for null ids/timestamps; check --events and the column options"
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
    distinct = pl.DataFrame({"u": users, "n": notes}).unique().group_by("u").len()
    per_user = np.zeros(n_users, np.int64)
    per_user[distinct["u"].to_numpy()] = distinct["len"].to_numpy()
    with np.errstate(divide="ignore"):
        return np.where(per_user > 0, np.round(_FIXED / np.maximum(per_user, 1)), 0).astype(np.int64)


def _co_views(
    users: np.ndarray,
    notes: np.ndarray,
    ts: np.ndarray,
    window_us: int,
    chunk_rows: int,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Each event's partner run and the query-note ranges to expand one at a time.

    Events are sorted by (user, t, note). The partners j of event i (same user,
    t_i <= t_j <= t_i + window) form one contiguous run [j_lo, j_hi): j_lo is the first
    event of the user at t_i (equal timestamps count both ways), j_hi comes from one
    searchsorted. Runs include i itself and same-note partners; those are dropped later.
    Query notes are cut into ranges of about `chunk_rows` candidate rows each.
    """
    n = len(users)
    idx = np.arange(n, dtype=np.int64)
    new_time = np.r_[True, (users[1:] != users[:-1]) | (ts[1:] != ts[:-1])]
    j_lo = np.maximum.accumulate(np.where(new_time, idx, 0))
    cand = _window_ends(users, ts, window_us) - j_lo
    del idx, new_time

    n_notes = int(notes.max()) + 1
    n_users = int(users.max()) + 1
    # A chunk's dedup key is (query - first query, target, user) packed into 64 bits.
    max_notes = (2**64 - 1) // (n_notes * n_users)
    if max_notes < 1:
        raise UserError(
            f"{n_notes:,} notes x {n_users:,} users is too large to mine in one run; "
            "split the logs by user and sum the partial pair counts"
        )
    per_note = np.cumsum(np.bincount(notes, weights=cand, minlength=n_notes))
    cuts = np.searchsorted(per_note, np.arange(chunk_rows, per_note[-1], chunk_rows), side="right")
    bounds = sorted({0, n_notes, *(int(c) for c in cuts if 0 < c < n_notes)})
    ranges = []
    for lo, hi in itertools.pairwise(bounds):
        ranges += [(a, min(hi, a + max_notes)) for a in range(lo, hi, max_notes)]
    return j_lo, cand, ranges


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


def _chunk_pairs(
    q_lo: int,
    q_hi: int,
    users: np.ndarray,
    notes: np.ndarray,
    j_lo: np.ndarray,
    cand: np.ndarray,
    sc: _Scoring,
    counts: dict[str, int],
) -> pl.DataFrame:
    """Ranked pairs for the query notes in [q_lo, q_hi): expand, dedup, score, top-k.

    Pairs with different query notes never meet, so each chunk is final on its own:
    memory is bounded by the chunk and the (top-k) output.
    """
    events = np.flatnonzero((notes >= q_lo) & (notes < q_hi))
    run = cand[events]
    total = int(run.sum())
    # (row) -> query event and target event; targets run j_lo[i], j_lo[i] + 1, ...
    q_ev = np.repeat(events, run)
    t_ev = np.repeat(j_lo[events] - (np.cumsum(run) - run), run)
    t_ev += np.arange(total, dtype=np.int64)
    q_note = notes[q_ev]
    t_note = notes[t_ev]
    keep = q_note != t_note
    # (query, target, user) in one uint64; sorting it dedups users and groups pairs.
    key = (q_note[keep] - np.uint32(q_lo)).astype(np.uint64) * np.uint64(sc.n_notes)
    key += t_note[keep]
    key *= np.uint64(sc.n_users)
    key += users[q_ev[keep]]
    del q_ev, t_ev, q_note, t_note, keep
    key.sort()
    if len(key):
        key = key[np.r_[True, key[1:] != key[:-1]]]
    counts["user_pairs"] += len(key)
    pair, user = np.divmod(key, np.uint64(sc.n_users))
    del key
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if len(pair) else np.zeros(0, np.int64)
    n_users = np.diff(np.r_[starts, len(pair)])
    query, target = np.divmod(pair[starts], np.uint64(sc.n_notes))
    query = (query + np.uint64(q_lo)).astype(np.uint32)
    target = target.astype(np.uint32)
    # Integer scores: user counts, or the fixed-point sum in units of 10^-9 (the
    # rounding of the score), so that ties are exact and packable into a sort key.
    if sc.weighting == "users":
        units = n_users.astype(np.int64)
    else:
        wsum = np.add.reduceat(sc.weight[user], starts) if len(starts) else np.zeros(0, np.int64)
        units = np.rint(wsum / _FIXED * 10.0**SCORE_DECIMALS).astype(np.int64)
    del pair, user
    score = _score(units, sc.weighting)
    counts["distinct_pairs"] += len(units)

    keep = np.ones(len(units), bool)
    if sc.min_score is not None:
        low = score < sc.min_score
        counts["dropped_min_score"] += int(low.sum())
        keep &= ~low
    if sc.max_score is not None:
        high = keep & (score > sc.max_score)
        counts["dropped_max_score"] += int(high.sum())
        keep &= ~high
    cross = keep & (sc.split[query] != sc.split[target])
    counts["dropped_cross_split"] += int(cross.sum())
    keep &= ~cross
    del score, cross

    query, units, target = _rank_order(query[keep], units[keep], target[keep], q_lo, q_hi, sc.n_notes)
    starts, lengths = _runs(query)
    rank = np.arange(len(query)) - np.repeat(starts, lengths) + 1
    top = rank <= sc.top_k
    counts["dropped_top_k"] += int((~top).sum())
    return pl.DataFrame(
        {
            "q": query[top],
            "t": target[top],
            "score": _score(units[top], sc.weighting),
            "rank": rank[top].astype(np.int32),
            "split": sc.split[query[top]],
        }
    )


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
