"""`i2i index NOTES --checkpoint RUN`: embed notes and write them to a Qdrant collection.

The store options defined here (`--workspace`, `--collection`, `--qdrant-url`,
`--qdrant-api-key`) are shared with `i2i related`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from core.errors import UserError
from i2i.commands._util import InferencePrecision, MaxBadImages, images_up_front
from indexer.backends import DEFAULT_COLLECTION, DEFAULT_WORKSPACE

if TYPE_CHECKING:
    from core.contracts import Embedder
    from indexer.backends import StoreSpec

Collection = Annotated[
    str, typer.Option("--collection", "-c", envvar="I2I_COLLECTION", help="Qdrant collection name.")
]
Workspace = Annotated[
    Path,
    typer.Option(
        envvar="I2I_WORKSPACE",
        help="Workspace folder; the embedded collection lives in WORKSPACE/qdrant/COLLECTION.",
    ),
]
QdrantUrl = Annotated[
    str | None,
    typer.Option(
        envvar="I2I_QDRANT_URL",
        help="Qdrant server or cluster URL (e.g. http://localhost:6333; gRPC on 6334 is used). "
        "Unset: embedded Qdrant Edge in the workspace.",
    ),
]
QdrantApiKey = Annotated[
    str | None, typer.Option(envvar="I2I_QDRANT_API_KEY", help="API key for the Qdrant server.")
]


def store_spec(
    collection: str,
    workspace: Path,
    qdrant_url: str | None,
    qdrant_api_key: str | None,
    **cluster: Any,
) -> StoreSpec:
    """A StoreSpec from the shared CLI options (a `--workspace` that is a file is refused)."""
    from indexer.backends import StoreSpec

    if not qdrant_url and workspace.exists() and not workspace.is_dir():
        raise UserError(f"--workspace {workspace} is a file; give a directory (default .i2i)")
    return StoreSpec(
        collection=collection,
        workspace=workspace,
        url=qdrant_url or None,
        api_key=qdrant_api_key or None,
        **cluster,
    )


STAGES = {"optimize": "building the HNSW index"}


class RateColumn(ProgressColumn):
    """Notes per second since the task started."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.1f} notes/s", style="progress.data.speed")


def command(
    notes: Annotated[
        Path, typer.Argument(help="Notes Parquet file (note_id, title, content, [tags], [image]).")
    ],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Training run directory (uses best/, else last/) or a checkpoint directory."),
    ] = None,
    vectors: Annotated[
        Path | None,
        typer.Option(help="Load vectors written by `i2i embed` instead of embedding (no model needed)."),
    ] = None,
    collection: Collection = DEFAULT_COLLECTION,
    workspace: Workspace = DEFAULT_WORKSPACE,
    qdrant_url: QdrantUrl = None,
    qdrant_api_key: QdrantApiKey = None,
    image_root: Annotated[
        Path | None, typer.Option(help="Folder relative image paths start from (default: the notes file's).")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Embed every note again, changed or not.")] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune", help="Delete points of notes no longer in the table (default: keep, report)."
        ),
    ] = False,
    max_prune: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="--prune refuses to delete more than this share of the collection."
        ),
    ] = 0.2,
    force: Annotated[
        bool, typer.Option("--force", help="Prune beyond --max-prune (e.g. a deliberately smaller table).")
    ] = False,
    recreate: Annotated[
        bool, typer.Option("--recreate", help="Drop and re-create the collection (e.g. for another model).")
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Notes per upsert and progress step (default: 256 embedding, 4096 --vectors)."
        ),
    ] = None,
    embed_batch_size: Annotated[int, typer.Option(min=1, help="Notes per model forward pass.")] = 32,
    device: Annotated[
        str | None, typer.Option(help="Model device: cpu, cuda, cuda:1 (default: auto).")
    ] = None,
    precision: InferencePrecision = "auto",
    shards: Annotated[int | None, typer.Option(min=1, help="Server: shards of a new collection.")] = None,
    replicas: Annotated[
        int | None, typer.Option(min=1, help="Server: replication factor of a new collection.")
    ] = None,
    max_bad_images: MaxBadImages = 0.05,
    write_consistency: Annotated[
        int | None, typer.Option(min=1, help="Server: replicas that must ack a write (new collection).")
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Server: nodes in the cluster; a new collection gets its shard count from the corpus "
            "size (a multiple of NODES, <= 5M points per shard), replication 2 and write consistency 2.",
        ),
    ] = None,
    parallel: Annotated[
        int, typer.Option(min=1, help="Server: processes uploading at once (qdrant-client upload_points).")
    ] = 1,
) -> None:
    """Embed NOTES with a checkpoint and upsert them into a Qdrant collection.

    Incremental and resumable: only new or changed notes are embedded (--full: all);
    a killed run is completed by running the same command again.
    """
    from core.contracts import read_notes
    from indexer.backends import open_store
    from indexer.job import index_notes

    console = Console(stderr=True)
    if (checkpoint is None) == (vectors is None):
        raise UserError(
            "give exactly one of --checkpoint RUN (embed now) or --vectors DIR (from `i2i embed`)"
        )
    frame = read_notes(notes)  # validate the input before loading a model
    if (nodes or parallel > 1) and not qdrant_url:
        raise UserError("--nodes and --parallel apply to a Qdrant server or cluster; add --qdrant-url URL")
    if nodes:
        from indexer.cluster import shard_count

        shards = shards or shard_count(frame.height, nodes)
        replicas = replicas or min(2, nodes)
        write_consistency = write_consistency or replicas
    spec = store_spec(
        collection,
        workspace,
        qdrant_url,
        qdrant_api_key,
        shard_number=shards,
        replication_factor=replicas,
        write_consistency_factor=write_consistency,
        upload_parallel=parallel,
    )
    embedder: Embedder
    if vectors is not None:  # embedded earlier by `i2i embed`: images were read then
        from indexer.vectors import VectorFiles

        with console.status(f"reading vectors {vectors}"):
            embedder = VectorFiles(vectors)
    else:
        from train.embed import load_embedder

        assert checkpoint is not None  # exactly one of --checkpoint / --vectors, checked above
        with console.status(f"loading checkpoint {checkpoint}"):
            model = load_embedder(checkpoint, device=device, precision=precision)
        if model.model.config.variant != "text-only":  # a text-only model reads no image
            images_up_front(notes, image_root, max_bad_images)
        embedder = model
    if batch_size is None:
        batch_size = 4096 if vectors is not None else 256
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("embedding + upserting", total=None)

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with open_store(spec) as store, progress:
        summary = index_notes(
            frame,
            embedder,
            store,
            image_root=image_root if image_root is not None else notes.parent,
            full=full,
            prune=prune,
            max_prune_share=max_prune,
            force=force,
            recreate=recreate,
            batch_size=batch_size,
            embed_batch_size=embed_batch_size,
            on_progress=on_progress,
            on_stage=lambda stage: progress.update(task, description=STAGES.get(stage, stage)),
        )

    table = Table(title="i2i index", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("collection", f"{summary.location} ({summary.collection})")
    table.add_row("model", f"{summary.model_id} (dim {summary.dim})")
    table.add_row("notes in table", f"{summary.notes:,}")
    table.add_row(
        "new / changed / unchanged", f"{summary.new:,} / {summary.changed:,} / {summary.unchanged:,}"
    )
    table.add_row(
        "embedded", f"{summary.embedded:,} in {summary.seconds:.1f} s ({summary.notes_per_s:,.1f} notes/s)"
    )
    if summary.not_in_table:
        action = "deleted (--prune)" if summary.pruned else "kept (--prune deletes them)"
        table.add_row("not in table", f"{summary.not_in_table:,} {action}")
    table.add_row("points in collection", f"{summary.points:,}")
    if summary.no_image:
        table.add_row("notes without image", f"{summary.no_image:,}")
    console.print(table)
    if summary.image_missing or summary.image_unreadable:
        console.print(
            f"[yellow]warning:[/] {summary.image_missing} missing and {summary.image_unreadable} unreadable "
            f"image(s) were embedded as blank images, e.g. {'; '.join(summary.image_examples)}",
            highlight=False,
            soft_wrap=True,
        )
