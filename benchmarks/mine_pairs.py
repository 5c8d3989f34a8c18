"""Benchmark `i2i mine-pairs` (Polars and Spark engines) against a DuckDB SQL self-join.

    .venv/bin/python benchmarks/mine_pairs.py                       # 1M and 4M events
    .venv/bin/python benchmarks/mine_pairs.py --sizes 200000        # a quick look
    .venv/bin/python benchmarks/mine_pairs.py --sizes 1000000,10000000,30000000 --engines polars
    .venv/bin/python benchmarks/mine_pairs.py --engines polars,spark --spark-master 'local[2]'
    PYSPARK_SUBMIT_ARGS="--driver-memory 6g pyspark-shell" \
        .venv/bin/python benchmarks/mine_pairs.py --engines polars,spark --sizes 10000000

(Spark in local mode runs in the driver's JVM, whose heap is 1 GB unless
PYSPARK_SUBMIT_ARGS sets it; peak memory below counts the Python processes, not the JVM.)

For each size the script writes logs with `i2i synth` (heavy-tailed users, logs only),
then runs, each in its own subprocess so that peak memory (ru_maxrss, the process and
its children, i.e. Spark's JVM) is its own:

- polars: `pipeline.mine.mine_pairs` + `write_pairs` (what `i2i mine-pairs` runs), under
  `--memory-limit`;
- spark: `pipeline.spark_mine.mine_pairs_spark` on `--spark-master` (what
  `i2i mine-pairs --engine spark` runs);
- duckdb: one SQL query with the same semantics: distinct (user, note, t) events, a
  self-join on user with 0 <= t_b - t_a <= window and a != b, DISTINCT per (user, query,
  target), inverse-activity weights summed in the same 2^-40 fixed point and rounded to 9
  decimals, the same note split (given to DuckDB as a table, computed outside its timing),
  and row_number() over (score desc, target asc) <= k.

All use the same thread count (default: all cores) and no per-user cap. The script
asserts that every engine produces the same pairs, scores and ranks as polars, then
prints wall time, events/s, peak memory and the ratios against polars. duckdb and
pyspark are benchmark / optional dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
WINDOW = "7d"
TOP_K = 10
SPLIT = (0.9, 0.05, 0.05)
FIXED = 2**40  # pipeline.mine._FIXED


def platform_args(events: int) -> dict[str, int]:
    """Synthetic platform for `events` log rows: 25 events per user on average."""
    return {"notes": max(1000, events // 50), "users": max(500, events // 25), "days": 14, "events": events}


def make_logs(folder: Path, events: int) -> Path:
    """Generate (or reuse) logs with `i2i synth`."""
    args = platform_args(events)
    marker = folder / "synth.json"
    if marker.exists() and all(json.loads(marker.read_text()).get(k) == v for k, v in args.items()):
        return folder / "logs"
    cmd = [sys.executable, "-m", "i2i.cli", "synth", str(folder), "--no-images", "--seed", "0"]
    for key, value in args.items():
        cmd += [f"--{key}", str(value)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder / "logs"


def write_note_splits(logs: Path, out: Path) -> None:
    """The note -> split table DuckDB joins against (same hash as the pipeline)."""
    import polars as pl

    from pipeline.splits import assign_splits

    notes = pl.scan_parquet(logs / "*.parquet").select("note_id").unique().collect()["note_id"].to_list()
    pl.DataFrame({"note_id": notes, "split": assign_splits(notes, SPLIT, seed=0)}).write_parquet(out)


# --- engines (each runs in its own subprocess) ------------------------------------


def run_polars(logs: Path, out: Path, threads: int, opts: dict[str, str]) -> None:
    from pipeline.mine import mine_pairs, write_pairs

    result = mine_pairs(
        logs,
        window=WINDOW,
        top_k=TOP_K,
        split=SPLIT,
        max_events_per_user=0,
        memory_limit=opts["memory_limit"],
    )
    write_pairs(result, out)
    print(json.dumps({"engine_stats": result.summary["engine"]}))


def run_spark(logs: Path, out: Path, threads: int, opts: dict[str, str]) -> None:
    from pyspark.sql import SparkSession

    from pipeline.spark_mine import mine_pairs_spark

    # The session `i2i mine-pairs` would start, with Spark's UI on so that its REST API
    # can report what the stages shuffled and spilled (the disk a larger run needs).
    spark = (
        SparkSession.builder.appName("i2i-mine-pairs-bench")
        .master(opts["spark_master"])
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    summary = mine_pairs_spark(
        logs, out, window=WINDOW, top_k=TOP_K, split=SPLIT, max_events_per_user=0, spark=spark
    )
    print(json.dumps({"engine_stats": {**summary["engine"], **spark_io(spark)}}))


def spark_io(spark: Any) -> dict[str, int]:
    """Bytes the finished stages shuffled and spilled, from Spark's monitoring REST API."""
    from urllib.request import urlopen

    sc = spark.sparkContext
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/stages?status=complete"
    with urlopen(url, timeout=30) as response:
        stages = json.load(response)
    keys = ("shuffleWriteBytes", "shuffleReadBytes", "diskBytesSpilled", "memoryBytesSpilled")
    total = {key: sum(int(stage.get(key, 0)) for stage in stages) for key in keys}
    return {
        "shuffle_write_bytes": total["shuffleWriteBytes"],
        "shuffle_read_bytes": total["shuffleReadBytes"],
        "disk_spill_bytes": total["diskBytesSpilled"],
        "memory_spill_bytes": total["memoryBytesSpilled"],
    }


def duckdb_sql(logs: Path, splits: Path, out: Path, window_us: int) -> str:
    return f"""
    COPY (
      WITH ev AS (
        SELECT DISTINCT user_id, note_id, epoch_us(ts) AS t
        FROM read_parquet('{logs}/*.parquet')
        WHERE user_id IS NOT NULL AND note_id IS NOT NULL AND ts IS NOT NULL
      ),
      nu AS (
        SELECT user_id, CAST(round({FIXED} / count(DISTINCT note_id)) AS BIGINT) AS w
        FROM ev GROUP BY user_id
      ),
      co AS (
        SELECT DISTINCT a.user_id, a.note_id AS q, b.note_id AS tg
        FROM ev a JOIN ev b
          ON a.user_id = b.user_id AND b.t >= a.t AND b.t <= a.t + {window_us} AND a.note_id <> b.note_id
      ),
      sc AS (
        SELECT q, tg, round(sum(w) / {FIXED}, 9) AS score FROM co JOIN nu USING (user_id) GROUP BY q, tg
      ),
      sp AS (
        SELECT sc.*, s1.split FROM sc
        JOIN read_parquet('{splits}') s1 ON s1.note_id = sc.q
        JOIN read_parquet('{splits}') s2 ON s2.note_id = sc.tg
        WHERE s1.split = s2.split
      ),
      rk AS (
        SELECT q AS query_id, tg AS target_id, score, split,
               row_number() OVER (PARTITION BY q ORDER BY score DESC, tg ASC) AS rank
        FROM sp
      )
      SELECT query_id, target_id, score, CAST(rank AS INTEGER) AS rank, split FROM rk WHERE rank <= {TOP_K}
    ) TO '{out / "pairs.parquet"}' (FORMAT parquet)
    """


def run_duckdb(logs: Path, out: Path, threads: int, opts: dict[str, str]) -> None:
    import duckdb

    from pipeline.logs import parse_duration

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads TO {threads}")
    con.execute(f"SET temp_directory = '{out / 'duckdb_tmp'}'")
    con.execute(duckdb_sql(logs, out.parent / "note_split.parquet", out, parse_duration(WINDOW)))


ENGINES = {"polars": run_polars, "spark": run_spark, "duckdb": run_duckdb}


def child(engine: str, logs: Path, out: Path, threads: int, opts: dict[str, str]) -> None:
    """Run one engine, then print its wall time and peak memory as JSON."""
    t0 = time.perf_counter()
    ENGINES[engine](logs, out, threads, opts)
    seconds = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Spark's JVM
    print(json.dumps({"engine": engine, "seconds": seconds, "peak_mb": max(own, children)}))


def measure(engine: str, logs: Path, out: Path, threads: int, opts: dict[str, str]) -> dict[str, Any]:
    env = {**os.environ, "POLARS_MAX_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", engine, str(logs), str(out), "--threads", str(threads)]
    cmd += ["--memory-limit", opts["memory_limit"], "--spark-master", opts["spark_master"]]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    result = lines[-1]
    result.update(*[x for x in lines if "engine_stats" in x])
    return result


# --- comparison ----------------------------------------------------------------------


def read_pairs(out: Path) -> pl.DataFrame:
    """All splits of an engine's output in one frame with a `split` column."""
    from core.contracts import SPLITS

    if (out / "pairs.parquet").exists():  # duckdb
        return pl.read_parquet(out / "pairs.parquet").with_columns(pl.col("split").cast(pl.Int8))
    return pl.concat(
        [
            pl.read_parquet(out / f"{s}.parquet").with_columns(pl.lit(i, pl.Int8).alias("split"))
            for i, s in enumerate(SPLITS)
        ]
    )


def compare(ours_out: Path, theirs_out: Path) -> int:
    """Assert both engines wrote the same pairs; return the number of pairs."""
    from polars.testing import assert_frame_equal

    ours, theirs = read_pairs(ours_out), read_pairs(theirs_out)
    order = ["query_id", "rank"]
    assert_frame_equal(ours.sort(order), theirs.select(ours.columns).sort(order), abs_tol=1e-9)
    return ours.height


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,4000000", help="comma-separated event counts")
    parser.add_argument("--engines", default="polars,duckdb", help="comma-separated: polars, spark, duckdb")
    parser.add_argument("--memory-limit", default="4GB", help="the polars engine's --memory-limit")
    parser.add_argument("--spark-master", default="local[2]", help="the spark engine's master URL")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_out" / "mine_pairs")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "LOGS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    opts = {"memory_limit": args.memory_limit, "spark_master": args.spark_master}
    if args.child:
        engine, logs, out = args.child
        child(engine, Path(logs), Path(out), args.threads, opts)
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "polars" not in engines or any(e not in ENGINES for e in engines):
        parser.error(f"--engines must include polars (the reference) and name only {', '.join(ENGINES)}")
    engines = ["polars"] + [e for e in engines if e != "polars"]

    rows = []
    for events in (int(s) for s in args.sizes.split(",")):
        folder = args.work / f"{events}"
        logs = make_logs(folder / "platform", events)
        if "duckdb" in engines:
            write_note_splits(logs, folder / "note_split.parquet")
        result = {}
        for engine in engines:
            result[engine] = r = measure(engine, logs, folder / f"out_{engine}", args.threads, opts)
            print(
                f"{events:>11,} events  {engine:<7} {r['seconds']:8.2f} s  "
                f"{events / r['seconds']:>10,.0f} ev/s  "
                f"{r['peak_mb']:8.0f} MB  {json.dumps(r.get('engine_stats', {}))}",
                flush=True,
            )
        pairs = 0
        for engine in engines[1:]:
            pairs = compare(folder / "out_polars", folder / f"out_{engine}")
        rows.append((events, pairs or read_pairs(folder / "out_polars").height, result))

    print(
        f"\nmine-pairs engines (window {WINDOW}, inverse-activity, top-{TOP_K}, split {SPLIT}, no cap, "
        f"{args.threads} threads each, polars --memory-limit {args.memory_limit}"
        + (f", spark {args.spark_master}" if "spark" in engines else "")
        + "); outputs identical"
    )
    head = f"{'events':>11} {'pairs':>10} |"
    for e in engines:
        head += f" {e + ' s':>9} {e[:6] + ' ev/s':>12} {e[:6] + ' MB':>9} |"
    print(head + " " + " ".join(f"{e + '/polars':>13}" for e in engines[1:]))
    for events, pairs, r in rows:
        line = f"{events:>11,} {pairs:>10,} |"
        for e in engines:
            line += f" {r[e]['seconds']:9.2f} {events / r[e]['seconds']:12,.0f} {r[e]['peak_mb']:9.0f} |"
        ratios = [f"{r[e]['seconds'] / r['polars']['seconds']:12.2f}x" for e in engines[1:]]
        print(line + " " + " ".join(ratios))


if __name__ == "__main__":
    main()
