"""`i2i emoji OUT`: the Unicode emoji as a platform (real words, real pictures, simulated co-views)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from i2i.commands._util import Force
from pipeline.options import (
    CLDR_COMMON,
    DEFAULT_COLORS,
    DEFAULT_EVENTS,
    DEFAULT_SPLIT,
    DEFAULT_SUBGROUP_SHARE,
    DEFAULT_USERS,
    EMOJI_TEST,
    FONT,
)


def command(
    out: Annotated[Path, typer.Argument(help="Output directory (only its platform files are replaced).")],
    users: Annotated[int, typer.Option(help="Number of users (activity is heavy-tailed).")] = DEFAULT_USERS,
    days: Annotated[int, typer.Option(help="Days of browsing; one log file per day.")] = 14,
    events: Annotated[int, typer.Option(help="Log rows in total (views, clicks, likes).")] = DEFAULT_EVENTS,
    image_size: Annotated[int, typer.Option(help="Side of the square PNG images, in pixels.")] = 96,
    colors: Annotated[
        int, typer.Option(help="Colour clusters (k-means over the images' dominant colours).")
    ] = DEFAULT_COLORS,
    subgroup_share: Annotated[
        float,
        typer.Option(
            help="Share of sessions that follow a subgroup (what the words say); the rest follow a "
            "colour cluster (what only the image shows).",
            min=0.0,
            max=1.0,
        ),
    ] = DEFAULT_SUBGROUP_SHARE,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same platform.")] = 0,
    subgroups: Annotated[
        str | None,
        typer.Option(help="Keep only these subgroups (comma-separated, e.g. face-smiling,animal-bird)."),
    ] = None,
    emoji_test: Annotated[Path, typer.Option(help="Unicode's emoji-test.txt.")] = EMOJI_TEST,
    cldr: Annotated[
        Path, typer.Option(help="CLDR `common` folder (annotations/en.xml, annotationsDerived/en.xml).")
    ] = CLDR_COMMON,
    font: Annotated[Path, typer.Option(help="The Noto colour emoji font.")] = FONT,
    force: Force = False,
) -> None:
    """Write the emoji platform: notes.parquet, images/, logs/, truth.parquet, users.parquet.

    Each fully-qualified emoji is a note (title: its name, tags: its CLDR keywords, image:
    drawn from the colour font). Half of each user's sessions (--subgroup-share) follow a
    subgroup (what the words say), the rest a colour cluster (what only the image shows). Deterministic by
    --seed. Needs: apt-get install fonts-noto-color-emoji unicode-cldr-core unicode-data.
    """
    from pipeline.emoji import generate_emoji

    console = Console(stderr=True)
    with console.status(f"drawing emoji and simulating co-views into {out}"):
        summary = generate_emoji(
            out,
            users=users,
            days=days,
            events=events,
            image_size=image_size,
            colors=colors,
            subgroup_share=subgroup_share,
            seed=seed,
            subgroups=[s.strip() for s in subgroups.split(",") if s.strip()] if subgroups else None,
            emoji_test=emoji_test,
            cldr=cldr,
            font=font,
            force=force,
        )
    table = Table(title=f"i2i emoji → {out}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    keys = ("notes", "groups", "subgroups", "colors", "users", "active_users", "days", "events", "log_files")
    for key in keys:
        table.add_row(key.replace("_", " "), f"{summary[key]:,}")
    table.add_row("events by kind", ", ".join(f"{k} {v:,}" for k, v in summary["event_counts"].items()))
    table.add_row("notes without CLDR keywords", f"{summary['without_keywords']:,}")
    table.add_row("images", f"{summary['image_size']} px")
    table.add_row("seconds", f"{summary['seconds']:.2f}")
    Console().print(table)
    split = ",".join(f"{x:g}" for x in DEFAULT_SPLIT)
    console.print(
        f"next: i2i mine-pairs {out}/logs --out PAIRS --window 1h --split {split} "
        "(simulated sessions last about an hour; this split leaves 300+ test queries)",
        highlight=False,
        soft_wrap=True,
    )
