"""`i2i serve --checkpoint RUN`: related notes over HTTP (see `i2i.serve`).

This module imports no web framework and no torch at import time: `i2i --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from i2i.commands._util import InferencePrecision
from i2i.commands.index import Collection, QdrantApiKey, QdrantUrl, Workspace, store_spec
from indexer.backends import DEFAULT_COLLECTION, DEFAULT_WORKSPACE


def command(
    checkpoint: Annotated[
        Path, typer.Option(help="Training run directory (uses best/, else last/) or a checkpoint directory.")
    ],
    collection: Collection = DEFAULT_COLLECTION,
    workspace: Workspace = DEFAULT_WORKSPACE,
    qdrant_url: QdrantUrl = None,
    qdrant_api_key: QdrantApiKey = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    device: Annotated[
        str | None, typer.Option(help="Model device: cpu, cuda, cuda:1 (default: auto).")
    ] = None,
    precision: InferencePrecision = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Torch threads per forward pass (default: torch's choice). On a shared or small "
            "machine, 1 is often faster for small models.",
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Most notes per embedding forward pass (1: no dynamic batching).")
    ] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a queued note waits for others to share its forward pass.")
    ] = 2.0,
    queue_size: Annotated[
        int, typer.Option(min=1, help="Notes that may wait to be embedded; beyond, requests get 503.")
    ] = 256,
    max_k: Annotated[int, typer.Option(min=1, help="Largest k a request may ask for.")] = 100,
    max_image_bytes: Annotated[int, typer.Option(min=1, help="Largest image a note may carry (bytes).")] = 4
    * 1024
    * 1024,
    max_text_chars: Annotated[
        int, typer.Option(min=1, help="Most characters of title + content + tags.")
    ] = 20_000,
    max_notes_per_request: Annotated[int, typer.Option(min=1, help="Most notes in one POST /v1/notes.")] = 64,
    auth_all: Annotated[
        bool,
        typer.Option("--auth-all", help="Require I2I_API_KEY on read routes too (health checks stay open)."),
    ] = False,
    flush_interval: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds between store flushes after writes (writes are in the WAL at once)."
        ),
    ] = 30.0,
) -> None:
    """Serve related notes over HTTP: GET/POST /v1/related, PUT/POST/DELETE /v1/notes, /metrics.

    Write routes need `Authorization: Bearer $I2I_API_KEY` when I2I_API_KEY is set.
    """
    from i2i.serve.server import serve
    from i2i.serve.settings import Batching, Limits, ServeSettings, api_key_from_env

    settings = ServeSettings(
        checkpoint=checkpoint,
        store=store_spec(collection, workspace, qdrant_url, qdrant_api_key),
        device=device,
        precision=precision,
        threads=threads,
        host=host,
        port=port,
        limits=Limits(
            max_k=max_k,
            max_image_bytes=max_image_bytes,
            max_text_chars=max_text_chars,
            max_notes_per_request=max_notes_per_request,
        ),
        batching=Batching(max_batch=max_batch, max_wait_ms=batch_wait_ms, max_queue=queue_size),
        api_key=api_key_from_env(),
        auth_all=auth_all,
        flush_interval_s=flush_interval,
    )
    serve(settings)
