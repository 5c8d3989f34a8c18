"""Reading view logs: files, columns, timestamps and windows.

Logs come as a directory, a file or a glob of Parquet or CSV files. Every file is scanned
lazily and normalised to four columns, `user` (str), `note` (str), `t` (Int64
microseconds since the epoch) and `t_bad` (the original text of a timestamp that could
not be parsed, else null), plus `event` when an event filter is asked for. Problems a
user can fix (no files, an unreadable file, a missing column) raise `UserError` naming
the file and what was found.

Integer epochs are checked before use: read in `ts_unit`, the largest one must fall
before the year 2200. Milliseconds read as seconds land tens of thousands of years
ahead, so they are refused with the numbers and the unit they look like.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from core.errors import UserError

LOG_SUFFIXES = (".parquet", ".csv")
TS_UNITS = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 0.001}  # microseconds per unit
MAX_EPOCH_SECONDS = 7_258_118_400  # 2200-01-01: a later timestamp is a unit mistake
_SECONDS_PER_YEAR = 31_556_952
_DURATION_UNITS = {
    "w": 7 * 86_400_000_000,
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|w|d|h|m|s)")


def parse_duration(text: str) -> int:
    """'7d', '36h', '1d12h', '90s', '500ms' -> microseconds (int)."""
    s = str(text).strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise UserError(
            f"window {text!r} is not a duration; expected a number and unit, e.g. 7d, 36h, 1d12h, "
            "90s or 500ms (units: w d h m s ms us)"
        )
    return round(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


def format_duration(us: int) -> str:
    """Microseconds -> a compact duration such as '7d' or '1d12h' (the inverse of parse)."""
    if us == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s", "ms", "us"):
        size = _DURATION_UNITS[unit]
        if us >= size:
            out.append(f"{us // size}{unit}")
            us %= size
    return "".join(out)


def find_log_files(source: str | Path) -> list[Path]:
    """The Parquet / CSV files named by a directory (recursively), a file or a glob."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOG_SUFFIXES)
        if not files:
            raise UserError(f"no .parquet or .csv files in directory {path}; point LOGS at your log files")
        return files
    if path.is_file():
        if path.suffix.lower() not in LOG_SUFFIXES:
            raise UserError(f"log file {path} is neither .parquet nor .csv; convert it or rename it")
        return [path]
    if any(ch in text for ch in "*?["):
        files = sorted(
            Path(p)
            for p in glob.glob(text, recursive=True)
            if Path(p).is_file() and Path(p).suffix.lower() in LOG_SUFFIXES
        )
        if not files:
            raise UserError(f"glob {text!r} matches no .parquet or .csv files")
        return files
    raise UserError(f"logs not found: {text} (expected a directory, file or glob of Parquet/CSV files)")


def _scan(path: Path) -> tuple[pl.LazyFrame, pl.Schema]:
    try:
        if path.suffix.lower() == ".csv":
            lf = pl.scan_csv(path, try_parse_dates=True, infer_schema_length=10_000)
        else:
            lf = pl.scan_parquet(path)
        return lf, lf.collect_schema()
    except Exception as exc:  # polars raises many kinds; all mean "cannot read this file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read log file {path}: {first}") from None


def _to_micros(col: str, dtype: pl.DataType, ts_unit: str, path: Path) -> pl.Expr:
    """An expression turning the timestamp column into Int64 microseconds since the epoch."""
    c = pl.col(col)
    if isinstance(dtype, pl.Datetime):
        return c.dt.epoch("us")
    if isinstance(dtype, pl.Date):
        return c.cast(pl.Datetime("us")).dt.epoch("us")
    if dtype.is_integer():
        if ts_unit == "ns":
            return c.cast(pl.Int64) // 1000
        return c.cast(pl.Int64) * int(TS_UNITS[ts_unit])
    if dtype.is_float():
        return (c * TS_UNITS[ts_unit]).round(0).cast(pl.Int64)
    if dtype == pl.Utf8:  # unparsable text becomes null; `t_bad` keeps it for the report
        return c.str.to_datetime(strict=False, time_unit="us").dt.epoch("us")
    raise UserError(
        f"column {col!r} in {path} has type {dtype}; expected a timestamp or integer epoch "
        f"({ts_unit}); convert it or pass --ts-col"
    )


def _year(value: float, unit: str) -> int:
    return int(1970 + value * TS_UNITS[unit] / 1_000_000 / _SECONDS_PER_YEAR)


def check_epoch_range(lo: float, hi: float, ts_unit: str, col: str, path: Path | str) -> None:
    """Refuse integer epochs that are implausible in `ts_unit` (after the year 2200).

    The message gives the range found, the year it means in `ts_unit`, and the unit the
    numbers fit (s, ms, us or ns), e.g. milliseconds read as seconds.
    """
    biggest = max(abs(lo), abs(hi))
    if biggest * TS_UNITS[ts_unit] <= MAX_EPOCH_SECONDS * 1_000_000:
        return
    fits = [u for u in TS_UNITS if biggest * TS_UNITS[u] <= MAX_EPOCH_SECONDS * 1_000_000]
    hint = (
        f"they look like {fits[0]} (year {_year(hi, fits[0])}): pass --ts-unit {fits[0]}"
        if fits
        else "no unit (s, ms, us, ns) makes them a date; check the column"
    )
    raise UserError(
        f"column {col!r} in {path} holds epochs {lo:,} to {hi:,}, which in --ts-unit {ts_unit} "
        f"would be the year {_year(hi, ts_unit):,}; {hint}"
    )


def _check_numeric_ts(lf: pl.LazyFrame, col: str, ts_unit: str, path: Path) -> None:
    try:
        lo, hi = lf.select(pl.col(col).min().alias("lo"), pl.col(col).max().alias("hi")).collect().row(0)
    except pl.exceptions.PolarsError as exc:
        raise UserError(f"cannot read log file {path}: {str(exc).strip().splitlines()[0]}") from None
    if lo is not None and hi is not None:
        check_epoch_range(lo, hi, ts_unit, col, path)


def scan_logs(
    files: Sequence[Path],
    *,
    user_col: str = "user_id",
    note_col: str = "note_id",
    ts_col: str = "ts",
    ts_unit: str = "s",
    event_col: str | None = None,
) -> pl.LazyFrame:
    """One LazyFrame `user, note, t, t_bad[, event]` over all `files`.

    Only the range of integer epochs is read here (to check the unit); the rest is lazy.
    """
    if ts_unit not in TS_UNITS:
        raise UserError(f"--ts-unit {ts_unit!r} is not known; expected one of {', '.join(TS_UNITS)}")
    frames = []
    wanted = [user_col, note_col, ts_col, *([event_col] if event_col else [])]
    for path in files:
        lf, schema = _scan(path)
        missing = [c for c in wanted if c not in schema]
        if missing:
            raise UserError(
                f"log file {path} lacks column(s) {', '.join(map(repr, missing))}; found "
                f"{', '.join(schema.names()) or 'none'}; "
                "name yours with --user-col / --note-col / --ts-col / --event-col"
            )
        dtype = schema[ts_col]
        if dtype.is_integer() or dtype.is_float():
            _check_numeric_ts(lf, ts_col, ts_unit, path)
        t = _to_micros(ts_col, dtype, ts_unit, path)
        bad = pl.when(t.is_null()).then(pl.col(ts_col)) if dtype == pl.Utf8 else pl.lit(None, pl.Utf8)
        exprs = [
            pl.col(user_col).cast(pl.Utf8).alias("user"),
            pl.col(note_col).cast(pl.Utf8).alias("note"),
            t.alias("t"),
            bad.cast(pl.Utf8).alias("t_bad"),
        ]
        if event_col:
            exprs.append(pl.col(event_col).cast(pl.Utf8).alias("event"))
        frames.append(lf.select(exprs))
    return pl.concat(frames, how="vertical")
