"""`i2i mine-pairs LOGS --out DIR`: co-viewed note pairs, split by note into train/val/test."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import UserError
from i2i.commands._util import Force
from pipeline.options import DEFAULT_MAX_EVENTS_PER_USER, DEFAULT_MEMORY_LIMIT, WEIGHTINGS

if TYPE_CHECKING:
    from pipeline.mine import MineResult

ENGINES = ("polars", "spark")


def command(
    logs: Annotated[
        str,
        typer.Argument(
            help="A directory, file or glob of Parquet/CSV view logs (with --engine spark also a table name)."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output directory ({train,val,test}.parquet, notes_split.parquet, summary.json)."
        ),
    ],
    window: Annotated[
        str, typer.Option(help="Co-view window after the first view: 7d, 36h, 90m, 1d12h...")
    ] = "7d",
    weighting: Annotated[
        str,
        typer.Option(
            help=f"Pair score: {' | '.join(WEIGHTINGS)} (each user adds 1/N_u distinct notes viewed)."
        ),
    ] = "inverse-activity",
    min_score: Annotated[float | None, typer.Option(help="Drop pairs scoring below this.")] = None,
    max_score: Annotated[
        float | None, typer.Option(help="Drop pairs scoring above this (suspiciously popular).")
    ] = None,
    top_k: Annotated[
        int, typer.Option(help="Targets kept per query note, by (score desc, target id asc).")
    ] = 10,
    max_events_per_user: Annotated[
        int, typer.Option(help="Keep each user's most recent N events (bounds bots' N^2 pairs); 0 = no cap.")
    ] = DEFAULT_MAX_EVENTS_PER_USER,
    split: Annotated[
        str, typer.Option(help="train,val,test shares of notes (split by note, seeded hash).")
    ] = ("0.9,0.05,0.05"),
    seed: Annotated[int, typer.Option(help="Seed of the note split hash.")] = 0,
    memory_limit: Annotated[
        str,
        typer.Option(help="Peak memory to stay under (e.g. 4GB); pairs are aggregated in partitions to fit."),
    ] = DEFAULT_MEMORY_LIMIT,
    user_col: Annotated[str, typer.Option(help="User id column.")] = "user_id",
    note_col: Annotated[str, typer.Option(help="Note id column.")] = "note_id",
    ts_col: Annotated[str, typer.Option(help="Timestamp column (timestamp or integer epoch).")] = "ts",
    ts_unit: Annotated[
        str,
        typer.Option(help="Unit of an integer epoch: s | ms | us | ns (checked: a unit mistake is refused)."),
    ] = "s",
    event_col: Annotated[str | None, typer.Option(help="Event type column, for --events.")] = None,
    events: Annotated[
        str | None, typer.Option(help="Comma-separated event types to keep, e.g. view,click.")
    ] = None,
    engine: Annotated[
        str, typer.Option(help="polars (this machine, bounded memory) | spark (a Spark cluster or local[N]).")
    ] = "polars",
    spark_master: Annotated[
        str | None,
        typer.Option(help="Spark master URL for --engine spark (e.g. local[4], spark://host:7077, yarn)."),
    ] = None,
    force: Force = False,
) -> None:
    """Mine related-note pairs: notes one user viewed within --window of each other.

    Pairs are directed (query viewed first, or at the same time), scored over users,
    filtered, split by note so evaluation notes never appear in training, and written
    atomically.
    """
    if engine not in ENGINES:
        raise UserError(f"--engine {engine!r} is not known; expected one of {', '.join(ENGINES)}")
    if spark_master and engine != "spark":
        raise UserError("--spark-master needs --engine spark")
    from pipeline.mine import MineResult, check_pairs_out, mine_pairs, write_pairs

    if engine == "polars":
        check_pairs_out(out, logs, force=force)
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        options = {
            "user_col": user_col,
            "note_col": note_col,
            "ts_col": ts_col,
            "ts_unit": ts_unit,
            "event_col": event_col,
            "events": [e.strip() for e in events.split(",") if e.strip()] if events else None,
            "window": window,
            "weighting": weighting,
            "min_score": min_score,
            "max_score": max_score,
            "top_k": top_k,
            "max_events_per_user": max_events_per_user,
            "split": split,
            "seed": seed,
            "progress": progress,
        }
        if engine == "spark":
            from pipeline.spark_mine import mine_pairs_spark

            summary = mine_pairs_spark(logs, out, master=spark_master, force=force, **options)  # type: ignore[arg-type]
            result = MineResult(pairs={}, summary=summary)
        else:
            result = mine_pairs(logs, memory_limit=memory_limit, **options)  # type: ignore[arg-type]
            progress("writing", 0, 1)
            write_pairs(result, out, force=force)
            progress("writing", 1, 1)
    Console().print(summary_table(result, out))
    unparsed = result.summary["counts"]["dropped_unparsed_ts"]
    if unparsed:
        examples = ", ".join(map(repr, result.summary["examples"]["unparsed_ts"]))
        console.print(
            f"[yellow]warning:[/] {unparsed:,} of {result.summary['counts']['rows_read']:,} rows have a "
            f"{ts_col!r} that is not a date (e.g. {examples}); they were dropped",
            highlight=False,
            soft_wrap=True,
        )


def summary_table(result: MineResult, out: Path) -> Table:
    """The counts a user checks after a run: what was read, dropped and written."""
    c = result.summary["counts"]
    p = result.summary["parameters"]
    table = Table(title=f"i2i mine-pairs → {out}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("rows read", f"{c['rows_read']:,}")
    drops = ("dropped_event_filter", "dropped_null_user", "dropped_null_note", "dropped_null_ts")
    for key in (*drops, "dropped_unparsed_ts"):
        if c[key]:
            table.add_row(f"  {key.replace('_', ' ')}", f"-{c[key]:,}")
    table.add_row("  duplicate events merged", f"-{c['duplicate_events']:,}")
    table.add_row(
        "  capped users (events dropped)",
        f"{c['users_capped']:,} (-{c['events_dropped_by_cap']:,})"
        + (f" at {p['max_events_per_user']:,}" if p["max_events_per_user"] else " (no cap)"),
    )
    table.add_row("events used", f"{c['events']:,}")
    table.add_row("users · notes", f"{c['users']:,} · {c['notes']:,}")
    table.add_row(f"co-views within {p['window']} (user, pair)", f"{c['user_pairs']:,}")
    table.add_row(f"distinct pairs ({p['weighting']})", f"{c['distinct_pairs']:,}")
    for key in ("dropped_min_score", "dropped_max_score", "dropped_cross_split", "dropped_top_k"):
        table.add_row(f"  {key.replace('_', ' ')}", f"-{c[key]:,}")
    for name, s in result.summary["splits"].items():
        table.add_row(f"{name} pairs (queries)", f"{s['pairs']:,} ({s['queries']:,})")
    eng = result.summary.get("engine", {})
    if eng:
        table.add_row(
            f"{eng['name']} partitions: largest (rows)",
            f"{eng.get('largest_partition_rows', 0):,}",
        )
    table.add_row("seconds", f"{result.summary['seconds']:.2f}")
    return table
