"""`i2i embed NOTES --checkpoint RUN --out VECTORS`: embed a corpus once, as Parquet shards.

Under `torchrun --nproc_per_node N` each rank embeds its own share of the notes (a stable
hash of the note id); `--shard I/N` picks a share by hand. Re-running skips the part
files already complete, so a killed rank re-does only its unfinished parts.
`i2i index --vectors VECTORS` and `i2i eval --vectors VECTORS` read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from i2i.commands._util import InferencePrecision


def command(
    notes: Annotated[
        Path, typer.Argument(help="Notes Parquet file (note_id, title, content, [tags], [image]).")
    ],
    checkpoint: Annotated[
        Path, typer.Option(help="Training run directory (uses best/, else last/) or a checkpoint directory.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Vectors directory (part-*.parquet files).")],
    shard: Annotated[
        str | None,
        typer.Option(help="This process's share I/N (default: torchrun's RANK/WORLD_SIZE, else 0/1)."),
    ] = None,
    part_size: Annotated[int, typer.Option(min=1, help="Notes per part file (the unit of resume).")] = 10_000,
    image_root: Annotated[
        Path | None, typer.Option(help="Folder relative image paths start from (default: the notes file's).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Notes per model forward pass.")] = 32,
    device: Annotated[
        str | None, typer.Option(help="Model device: cpu, cuda, cuda:1 (default: auto; LOCAL_RANK's GPU).")
    ] = None,
    precision: InferencePrecision = "auto",
) -> None:
    """Embed NOTES with a checkpoint into Parquet vector shards (note_id, content_hash, model_id, vector)."""
    import os

    from core.contracts import read_notes
    from indexer.vectors import check_vectors_dir, embed_to_vectors, parse_shard
    from train.embed import load_embedder

    console = Console(stderr=True)
    index, count = parse_shard(shard)
    check_vectors_dir(out)
    frame = read_notes(notes)
    if device is None and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    with console.status(f"loading checkpoint {checkpoint}"):
        embedder = load_embedder(checkpoint, device=device, precision=precision)
    progress = Progress(
        TextColumn(f"shard {index}/{count}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("embedding", total=None)
    with progress:
        summary = embed_to_vectors(
            frame,
            embedder,
            out,
            image_root=image_root if image_root is not None else notes.parent,
            shard=index,
            shards=count,
            part_size=part_size,
            batch_size=batch_size,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    table = Table(title=f"i2i embed → {out}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("model", f"{summary.model_id} (dim {summary.dim})")
    table.add_row("shard", f"{summary.shard} of {summary.shards}")
    table.add_row("notes in shard", f"{summary.notes:,}")
    table.add_row("parts (complete before)", f"{summary.parts:,} ({summary.parts_done_before:,})")
    table.add_row("embedded", f"{summary.embedded:,} in {summary.seconds:.1f} s")
    Console().print(table)
