"""Mine related-note pairs on Apache Spark: the job of `pipeline.mine`, as DataFrame operations.

The semantics are those of `pipeline.mine` (its docstring is the definition) and the
output files are byte for byte the same: both engines write through
`pipeline.mine.write_pairs`, and every number is computed the same way:

- events are the distinct (user, note, t) rows; the cap keeps each user's most recent
  events, ties at the cut broken by the higher note id;
- an event's partners are the run of that user's events in [t, t + window] (a RANGE
  window frame: equal timestamps count both ways, the edge counts), found as the first
  index at t and a count, then joined back by (user, index): no quadratic self-join;
- users count once per ordered pair; inverse-activity weights are round(2^40 / N_u),
  summed as integers and turned into 10^-9 units with the same double operations;
- filters, the note split (`pipeline.splits`: SHA-256 in Spark SQL, integer cut points),
  and top-k by (score desc, target id asc) with row_number.

Skew: the co-view rows are shuffled once, by a hash of the query note (what the Polars
engine partitions on), and deduplicated, summed and ranked within those partitions. A
partition's size is the candidate rows of its query notes: bounded per user by the cap
(at most cap x partners in the window), and reported in `summary["engine"]` as the
largest partition beside the mean, computed from the events before the shuffle.

Output: Spark writes the ranked pairs, range-partitioned and sorted by (split,
query_id, rank), as Parquet parts into a staging directory beside `--out`; the driver
streams the parts in order into `{train,val,test}.parquet` (atomically, as the Polars
engine does). On a cluster the staging directory must be on a file system that the
executors and the driver share.

Input: a directory, file or glob of Parquet/CSV logs (as the Polars engine), or the
name of a table known to the session's catalog (a metastore when one is configured).
Timestamps: Spark timestamps and dates, integer or float epochs in `ts_unit`, and text
in ISO 8601 (other text formats may parse differently from Polars).
"""

from __future__ import annotations

import glob as globlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.contracts import SPLITS
from core.errors import UserError
from pipeline.logs import TS_UNITS, check_epoch_range, find_log_files, parse_duration
from pipeline.mine import (
    _FIXED,
    DEFAULT_MAX_EVENTS_PER_USER,
    SCORE_DECIMALS,
    MineResult,
    Progress,
    _check_options,
    _noop,
    check_pairs_out,
    make_summary,
    mining_params,
    write_pairs,
)
from pipeline.splits import SPLIT_HASH_BITS, parse_split, split_thresholds

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Row, SparkSession


def _one_row(aggregate: DataFrame) -> Row:
    """The row of a global aggregate (Spark always returns exactly one)."""
    row = aggregate.first()
    if row is None:
        raise RuntimeError("a global aggregate returned no row")
    return row


INSTALL_HINT = "pip install 'i2i[spark]' and a Java runtime (Debian: apt-get install default-jre-headless)"


def spark_session(master: str | None = None, *, shuffle_partitions: int | None = None) -> SparkSession:
    """A Spark session for mining (UTC session time zone); `master` None keeps the default."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UserError(f"--engine spark needs pyspark: {INSTALL_HINT}") from None
    builder = SparkSession.builder.appName("i2i-mine-pairs").config("spark.sql.session.timeZone", "UTC")
    if master:
        builder = builder.master(master)
    if master and master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
    if shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    try:
        return builder.getOrCreate()
    except Exception as exc:  # pyspark raises its own runtime errors when Java cannot start
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot start Spark ({master or 'default master'}): {first}; {INSTALL_HINT}"
        ) from None


# --- input ---------------------------------------------------------------------------


def _is_remote(text: str) -> bool:
    return "://" in text


def read_logs(
    spark: SparkSession,
    logs: str | Path,
    *,
    user_col: str,
    note_col: str,
    ts_col: str,
    ts_unit: str,
    event_col: str | None,
) -> tuple[DataFrame, list[str]]:
    """`user, note, t, t_bad[, event]` over the logs (files, glob or table), and the sources read.

    `t_bad` keeps the text of a timestamp that did not parse (else null), as
    `pipeline.logs.scan_logs` does; numeric epochs are checked against `ts_unit` first.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if ts_unit not in TS_UNITS:
        raise UserError(f"--ts-unit {ts_unit!r} is not known; expected one of {', '.join(TS_UNITS)}")
    text = str(logs)
    frames: list[tuple[DataFrame, str]] = []
    if _is_remote(text):  # hdfs://, s3a://...: Spark lists them itself
        reader = spark.read.option("header", True).option("inferSchema", True)
        frames.append((reader.csv(text) if text.endswith(".csv") else spark.read.parquet(text), text))
        sources = [text]
    elif Path(text).exists() or any(ch in text for ch in "*?["):
        files = [str(f) for f in find_log_files(text)]
        sources = files
        csv = [f for f in files if f.lower().endswith(".csv")]
        parquet = [f for f in files if not f.lower().endswith(".csv")]
        if parquet:
            frames.append((spark.read.parquet(*parquet), parquet[0]))
        if csv:
            frames.append((spark.read.option("header", True).option("inferSchema", True).csv(csv), csv[0]))
    elif spark.catalog.tableExists(text):
        frames.append((spark.table(text), f"table {text}"))
        sources = [f"table:{text}"]
    else:
        raise UserError(
            f"logs not found: {text} (expected a directory, file or glob of Parquet/CSV files, "
            "or a table in the Spark catalog)"
        )
    wanted = [user_col, note_col, ts_col, *([event_col] if event_col else [])]
    out = None
    for df, where in frames:
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise UserError(
                f"logs {where} lack column(s) {', '.join(map(repr, missing))}; found "
                f"{', '.join(df.columns) or 'none'}; "
                "name yours with --user-col / --note-col / --ts-col / --event-col"
            )
        dtype = df.schema[ts_col].dataType
        if isinstance(dtype, T.NumericType):
            lo, hi = _one_row(df.agg(F.min(ts_col), F.max(ts_col)))
            if lo is not None and hi is not None:
                check_epoch_range(lo, hi, ts_unit, ts_col, where)
        t = _to_micros(df, ts_col, ts_unit, where)
        bad = F.when(t.isNull(), F.col(ts_col)) if isinstance(dtype, T.StringType) else F.lit(None)
        cols = [
            F.col(user_col).cast("string").alias("user"),
            F.col(note_col).cast("string").alias("note"),
            t.alias("t"),
            bad.cast("string").alias("t_bad"),
        ]
        if event_col:
            cols.append(F.col(event_col).cast("string").alias("event"))
        part = df.select(cols)
        out = part if out is None else out.unionByName(part)
    assert out is not None
    return out, sources


def _to_micros(df: DataFrame, col: str, ts_unit: str, where: str) -> Column:
    """Spark's counterpart of `pipeline.logs._to_micros`: Int64 microseconds since the epoch."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    dtype = df.schema[col].dataType
    c = F.col(col)
    per_unit = TS_UNITS[ts_unit]
    if isinstance(dtype, T.TimestampType | T.TimestampNTZType):
        return F.unix_micros(c.cast("timestamp"))
    if isinstance(dtype, T.DateType):
        return F.unix_micros(c.cast("timestamp"))
    if isinstance(dtype, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        if per_unit >= 1:
            return c.cast("long") * F.lit(int(per_unit))
        step = round(1 / per_unit)
        return (c.cast("long") - F.pmod(c.cast("long"), F.lit(step))) / F.lit(step)
    if isinstance(dtype, T.FloatType | T.DoubleType | T.DecimalType):
        return F.bround(c.cast("double") * F.lit(float(per_unit)), 0).cast("long")
    if isinstance(dtype, T.StringType):  # unparsable text becomes null, then is dropped and counted
        return F.unix_micros(F.try_to_timestamp(c))
    raise UserError(
        f"column {col!r} in {where} has type {dtype.simpleString()}; expected a timestamp or integer "
        f"epoch ({ts_unit}); convert it or pass --ts-col"
    )


def _split_of(note: Column, shares: tuple[float, float, float], seed: int) -> Column:
    """`pipeline.splits.assign_splits` as a Spark expression (SHA-256, integer cut points)."""
    from pyspark.sql import functions as F

    cut_train, cut_val, remap = split_thresholds(shares)
    digest = F.sha2(F.concat(F.lit(f"{seed}:"), note), 256)
    h = F.conv(F.substring(digest, 1, SPLIT_HASH_BITS // 4), 16, 10).cast("long")
    raw = F.when(h < F.lit(cut_train), 0).when(h < F.lit(cut_val), 1).otherwise(2)
    return F.element_at(F.array(*[F.lit(r) for r in remap]), raw + 1).cast("byte")


# --- the job -------------------------------------------------------------------------


def mine_pairs_spark(
    logs: str | Path,
    out: str | Path,
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
    master: str | None = None,
    spark: SparkSession | None = None,
    shuffle_partitions: int | None = None,
    staging: str | Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Mine co-view pairs on Spark and write them into `out`; returns the summary.

    `spark` reuses a session (else one is started on `master`); `staging` is where the
    executors write the ranked parts (default: a temporary directory beside `out`).
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    report = progress or _noop
    window_us = parse_duration(window)
    shares = parse_split(split)
    _check_options(weighting, min_score, max_score, top_k, max_events_per_user, events, event_col)
    if not _is_remote(str(logs)):
        check_pairs_out(out, logs, force=force)
    spark = spark or spark_session(master, shuffle_partitions=shuffle_partitions)
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions") or 200)
    keep_events = list(events) if events and event_col else None

    report("reading logs", 0, None)
    raw, sources = read_logs(
        spark, logs, user_col=user_col, note_col=note_col, ts_col=ts_col, ts_unit=ts_unit, event_col=event_col
    )
    keep = F.col("event").isin(keep_events) if keep_events else F.lit(True)
    user, note, t, bad = F.col("user"), F.col("note"), F.col("t"), F.col("t_bad")
    valid_ids = keep & user.isNotNull() & note.isNotNull()
    stats = _one_row(
        raw.agg(
            F.count(F.lit(1)).alias("rows_read"),
            F.sum((~keep).cast("long") if keep_events else F.lit(0)).alias("dropped_event_filter"),
            F.sum((keep & user.isNull()).cast("long")).alias("dropped_null_user"),
            F.sum((keep & user.isNotNull() & note.isNull()).cast("long")).alias("dropped_null_note"),
            F.sum((valid_ids & t.isNull() & bad.isNull()).cast("long")).alias("dropped_null_ts"),
            F.sum((valid_ids & bad.isNotNull()).cast("long")).alias("dropped_unparsed_ts"),
        )
    )
    counts: dict[str, Any] = {k: int(v or 0) for k, v in stats.asDict().items()}
    unparsed_examples: list[str] = []
    if counts["dropped_unparsed_ts"]:
        found = raw.filter(valid_ids & bad.isNotNull()).select("t_bad").distinct().orderBy("t_bad").limit(3)
        unparsed_examples = [r[0] for r in found.collect()]

    clean = raw.filter(keep).dropna(subset=["user", "note", "t"]).select("user", "note", "t")
    distinct = clean.distinct().persist(StorageLevel.MEMORY_AND_DISK)
    per_user = distinct.groupBy("user").agg(F.count(F.lit(1)).alias("n"))
    cap = max_events_per_user
    ev_stats = _one_row(
        per_user.agg(
            F.sum("n").alias("events"),
            F.count(F.lit(1)).alias("users"),
            F.sum((F.col("n") > cap).cast("long") if cap > 0 else F.lit(0)).alias("users_capped"),
            F.sum(F.greatest(F.col("n") - cap, F.lit(0)) if cap > 0 else F.lit(0)).alias(
                "events_dropped_by_cap"
            ),
        )
    )
    events_kept = int(ev_stats["events"] or 0)
    if events_kept == 0:
        distinct.unpersist()
        raise UserError(
            f"no usable events: {counts['rows_read']} row(s) read, all dropped by the event filter or "
            "for null ids/timestamps; check --events and the column options"
        )
    kept_rows = counts["rows_read"] - counts["dropped_event_filter"]
    kept_rows -= counts["dropped_null_user"] + counts["dropped_null_note"]
    kept_rows -= counts["dropped_null_ts"] + counts["dropped_unparsed_ts"]
    counts["duplicate_events"] = kept_rows - events_kept
    counts["events"] = events_kept
    counts["users"] = int(ev_stats["users"])
    counts["notes"] = distinct.select("note").distinct().count()
    counts["events_dropped_by_cap"] = int(ev_stats["events_dropped_by_cap"] or 0)
    counts["users_capped"] = int(ev_stats["users_capped"] or 0)
    report("reading logs", 1, 1)

    # Cap, then each event's index, first partner (j_lo) and partner count (cand).
    ev = distinct
    if cap > 0:
        recent = Window.partitionBy("user").orderBy(F.col("t").desc(), F.col("note").desc())
        ev = (
            ev.withColumn("recent", F.row_number().over(recent)).filter(F.col("recent") <= cap).drop("recent")
        )
    by_user = Window.partitionBy("user")
    ev = (
        ev.withColumn("idx", F.row_number().over(by_user.orderBy("t", "note")) - 1)
        .withColumn("j_lo", F.min("idx").over(Window.partitionBy("user", "t")))
        .withColumn("cand", F.count(F.lit(1)).over(by_user.orderBy("t").rangeBetween(0, window_us)))
        .withColumn("n_u", F.size(F.collect_set("note").over(by_user)))
        .withColumn("split", _split_of(F.col("note"), shares, seed))
    )
    if weighting == "users":
        ev = ev.withColumn("w", F.lit(1).cast("long"))
    else:  # round(2^40 / N_u), exact in integers (never a tie: N_u < 2^41)
        fixed = int(_FIXED)
        ev = ev.withColumn("w", F.expr(f"div({2 * fixed} + n_u, 2 * n_u)"))
    ev = ev.persist(StorageLevel.MEMORY_AND_DISK)
    skew = _skew(ev, partitions)

    report("co-viewing", 0, 1)
    queries = ev.select(
        "user",
        F.col("note").alias("q"),
        F.col("split").alias("q_split"),
        "w",
        F.explode(F.sequence(F.col("j_lo"), F.col("j_lo") + F.col("cand") - 1)).alias("j"),
    )
    targets = ev.select(
        "user", F.col("idx").alias("j"), F.col("note").alias("tg"), F.col("split").alias("t_split")
    )
    co = (
        queries.join(targets, ["user", "j"])
        .filter(F.col("q") != F.col("tg"))
        .repartition(partitions, "q")  # one shuffle: dedup, sums and ranking stay within it
        .dropDuplicates(["q", "tg", "user"])
    )
    pairs = co.groupBy("q", "tg", "q_split", "t_split").agg(
        F.count(F.lit(1)).alias("users"), F.sum("w").alias("wsum")
    )
    if weighting == "users":
        pairs = pairs.withColumn("units", F.col("users").cast("long"))
        score = F.col("units").cast("double")
    else:
        scale = float(10**SCORE_DECIMALS)
        units = F.rint(F.col("wsum").cast("double") / F.lit(_FIXED) * F.lit(scale)).cast("long")
        pairs = pairs.withColumn("units", units)
        score = F.col("units") / F.lit(scale)
    pairs = pairs.withColumn("score", score)
    low = F.col("score") < F.lit(min_score) if min_score is not None else F.lit(False)
    high = ~low & (F.col("score") > F.lit(max_score)) if max_score is not None else F.lit(False)
    pairs = pairs.withColumn("low", low).withColumn("high", high)
    pairs = pairs.withColumn("cross", ~F.col("low") & ~F.col("high") & (F.col("q_split") != F.col("t_split")))
    pairs = pairs.withColumn("kept", ~(F.col("low") | F.col("high") | F.col("cross")))
    pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
    pair_stats = _one_row(
        pairs.agg(
            F.count(F.lit(1)).alias("distinct_pairs"),
            F.sum("users").alias("user_pairs"),
            F.sum(F.col("low").cast("long")).alias("dropped_min_score"),
            F.sum(F.col("high").cast("long")).alias("dropped_max_score"),
            F.sum(F.col("cross").cast("long")).alias("dropped_cross_split"),
            F.sum(F.col("kept").cast("long")).alias("kept"),
        )
    )
    for key in (
        "user_pairs",
        "distinct_pairs",
        "dropped_min_score",
        "dropped_max_score",
        "dropped_cross_split",
    ):
        counts[key] = int(pair_stats[key] or 0)
    report("co-viewing", 1, 1)

    report("ranking", 0, 1)
    by_query = Window.partitionBy("q").orderBy(F.col("units").desc(), F.col("tg").asc())
    ranked = (
        pairs.filter("kept")
        .withColumn("rank", F.row_number().over(by_query).cast("int"))
        .filter(F.col("rank") <= top_k)
        .select(
            F.col("q").alias("query_id"),
            F.col("tg").alias("target_id"),
            "score",
            "rank",
            F.col("q_split").cast("int").alias("split"),
        )
    )
    out_path = Path(out)
    stage_root = Path(staging) if staging else out_path.parent
    stage_root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.spark-", dir=stage_root))
    try:
        ranked.orderBy("split", "query_id", "rank").write.mode("overwrite").partitionBy("split").parquet(
            str(stage / "ranked")
        )
        report("ranking", 1, 1)
        parts = {
            name: sorted(Path(p) for p in globlib.glob(str(stage / "ranked" / f"split={i}" / "*.parquet")))
            for i, name in enumerate(SPLITS)
        }
        splits, final_rows = _split_stats(parts)
        note_splits = _note_splits(distinct, shares, seed)
        counts["dropped_top_k"] = int(pair_stats["kept"] or 0) - final_rows
        for cached in (pairs, ev, distinct):
            cached.unpersist()
        engine = {
            "name": "spark",
            "master": spark.sparkContext.master,
            "spark_version": spark.version,
            "shuffle_partitions": partitions,
            **skew,
        }
        params = mining_params(
            user_col=user_col,
            note_col=note_col,
            ts_col=ts_col,
            ts_unit=ts_unit,
            event_col=event_col,
            events=keep_events,
            window_us=window_us,
            weighting=weighting,
            min_score=min_score,
            max_score=max_score,
            top_k=top_k,
            max_events_per_user=max_events_per_user,
            shares=shares,
            seed=seed,
        )
        examples = {"unparsed_ts": unparsed_examples}
        seconds = time.perf_counter() - t0
        summary = make_summary(logs, sources, params, counts, engine, splits, seconds, examples)
        report("writing", 0, 1)
        write_pairs(
            MineResult(pairs=dict(parts), summary=summary, note_splits=note_splits), out_path, force=force
        )
        report("writing", 1, 1)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary


def _skew(ev: DataFrame, partitions: int) -> dict[str, Any]:
    """Rows per co-view partition (hash of the query note), computed from the events.

    A partition receives the candidate rows of its query notes; Spark's hash partitioning
    is pmod(murmur3(q), partitions), reproduced here with `hash`.
    """
    from pyspark.sql import functions as F

    per_part = ev.groupBy(F.pmod(F.hash("note"), F.lit(partitions)).alias("p")).agg(
        F.sum("cand").alias("rows")
    )
    row = _one_row(
        per_part.agg(
            F.max("rows").alias("largest"), F.sum("rows").alias("total"), F.count(F.lit(1)).alias("used")
        )
    )
    heaviest = _one_row(ev.groupBy("user").agg(F.sum("cand").alias("rows")).agg(F.max("rows")))[0]
    total = int(row["total"] or 0)
    return {
        "largest_partition_rows": int(row["largest"] or 0),
        "mean_partition_rows": round(total / partitions, 1),
        "candidate_rows": total,
        "largest_user_rows": int(heaviest or 0),
    }


def _note_splits(distinct: DataFrame, shares: tuple[float, float, float], seed: int) -> Any:
    """The split of every note seen in the logs (`note_id, split`, sorted by note id), as
    the Polars engine writes it to `notes_split.parquet` (evaluation pools read it). One
    row per distinct note is collected to the driver: the catalogue, not the events."""
    import polars as pl
    from pyspark.sql import functions as F

    rows = (
        distinct.select(F.col("note").alias("note_id"))
        .distinct()
        .withColumn("split", _split_of(F.col("note_id"), shares, seed))
        .collect()
    )
    return pl.DataFrame(
        {
            "note_id": pl.Series([str(r["note_id"]) for r in rows], dtype=pl.Utf8),
            "split": pl.Series([SPLITS[int(r["split"])] for r in rows], dtype=pl.Utf8),
        }
    ).sort("note_id")


def _split_stats(parts: dict[str, list[Path]]) -> tuple[dict[str, dict[str, int]], int]:
    """Pairs and distinct queries per split, read from the staged parts (small columns only)."""
    import polars as pl

    splits = {}
    total = 0
    for name, files in parts.items():
        if files:
            df = pl.scan_parquet(files).select(
                pl.len().alias("pairs"), pl.col("query_id").n_unique().alias("queries")
            )
            row = df.collect().row(0, named=True)
        else:
            row = {"pairs": 0, "queries": 0}
        splits[name] = {"pairs": int(row["pairs"]), "queries": int(row["queries"])}
        total += splits[name]["pairs"]
    return splits, total


def spark_result(out: str | Path) -> MineResult:
    """Read back what `mine_pairs_spark` wrote (for tests and callers that want frames)."""
    import json

    import polars as pl

    out = Path(out)
    pairs = {name: pl.read_parquet(out / f"{name}.parquet") for name in SPLITS}
    return MineResult(pairs=dict(pairs), summary=json.loads((out / "summary.json").read_text()))
