"""`i2i related NOTE_ID`: the top-k related notes from the indexed collection."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from i2i.commands.index import Collection, QdrantApiKey, QdrantUrl, Workspace, store_spec
from indexer.backends import DEFAULT_COLLECTION, DEFAULT_WORKSPACE


def command(
    note_id: Annotated[str, typer.Argument(help="Id of an indexed note.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many related notes.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    collection: Collection = DEFAULT_COLLECTION,
    workspace: Workspace = DEFAULT_WORKSPACE,
    qdrant_url: QdrantUrl = None,
    qdrant_api_key: QdrantApiKey = None,
) -> None:
    """Top-k notes related to NOTE_ID (the note itself excluded), best first."""
    from indexer.backends import open_store
    from retriever.related import related

    with open_store(store_spec(collection, workspace, qdrant_url, qdrant_api_key)) as store:
        store.meta()  # a clear error when the collection does not exist
        results = related(store, note_id, k)
    if as_json:
        typer.echo(
            json.dumps({"note_id": note_id, "related": [r.to_dict() for r in results]}, ensure_ascii=False)
        )
        return
    table = Table(title=f"related to {note_id}")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("note id")
    table.add_column("title")
    for r in results:
        table.add_row(str(r.rank), f"{r.score:.4f}", r.note_id, r.title)
    Console().print(table)
