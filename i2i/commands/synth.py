"""`i2i synth OUT`: write a synthetic platform (notes, images, logs, ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from i2i.commands._util import Force


def command(
    out: Annotated[
        Path, typer.Argument(help="Output directory; only the platform's own files in it are replaced.")
    ],
    notes: Annotated[int, typer.Option(help="Number of notes.")] = 500,
    users: Annotated[int, typer.Option(help="Number of users (activity is heavy-tailed).")] = 200,
    days: Annotated[int, typer.Option(help="Days of browsing; one log file per day.")] = 14,
    events: Annotated[int, typer.Option(help="Log rows in total (views, clicks, likes).")] = 20_000,
    image_size: Annotated[int, typer.Option(help="Side of the square PNG images, in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same platform.")] = 0,
    topics: Annotated[
        int | None, typer.Option(help="Text topics (default: about one per 30 notes, 4..64).")
    ] = None,
    motifs: Annotated[
        int | None, typer.Option(help="Visual motifs (default: about one per 30 notes, 4..64).")
    ] = None,
    images: Annotated[
        bool, typer.Option(help="Draw the images (--no-images for logs-only benchmarks).")
    ] = True,
    workers: Annotated[int, typer.Option(help="Processes drawing images.")] = 1,
    force: Force = False,
) -> None:
    """Write a synthetic platform: notes.parquet, images/, logs/, truth.parquet, users.parquet.

    Each note has a text topic and a visual motif its text never mentions; users browse
    in sessions driven by topics, motifs or both, so related pairs are explainable by
    text, by image, or by both. Deterministic by --seed.
    """
    from pipeline.synth import generate_platform

    console = Console(stderr=True)
    with console.status(f"writing synthetic platform to {out}"):
        summary = generate_platform(
            out,
            notes=notes,
            users=users,
            days=days,
            events=events,
            image_size=image_size,
            seed=seed,
            topics=topics,
            n_motifs=motifs,
            images=images,
            workers=workers,
            force=force,
        )
    table = Table(title=f"i2i synth → {out}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key in ("notes", "topics", "motifs", "users", "active_users", "days", "events", "log_files"):
        table.add_row(key.replace("_", " "), f"{summary[key]:,}")
    table.add_row("events by kind", ", ".join(f"{k} {v:,}" for k, v in summary["event_counts"].items()))
    table.add_row("text lengths", ", ".join(f"{k} {v:,}" for k, v in summary["text_length_counts"].items()))
    table.add_row("images", f"{summary['image_size']} px" if summary["images"] else "skipped")
    table.add_row("seconds", f"{summary['seconds']:.2f}")
    Console().print(table)
