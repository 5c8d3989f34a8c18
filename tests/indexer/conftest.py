"""Fixtures for store and index-job tests: both real backends, tiny notes tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from indexer.backends import StoreSpec, open_store
from indexer.store import VectorStore

TOPICS = ["garden roses", "city bikes", "sourdough bread", "mountain lakes", "vintage cameras"]


def make_notes(n: int, start: int = 0) -> pl.DataFrame:
    """`n` notes over five topics, each note sharing words with its topic mates."""
    ids = [f"n{i:04d}" for i in range(start, start + n)]
    topic = [TOPICS[i % len(TOPICS)] for i in range(start, start + n)]
    return pl.DataFrame(
        {
            "note_id": ids,
            "title": [f"{t} {i}" for i, t in zip(ids, topic, strict=True)],
            "content": [
                f"notes about {t} number {i} #{t.split()[0]}#" for i, t in zip(ids, topic, strict=True)
            ],
            "image": [None] * n,
        },
        schema={"note_id": pl.Utf8, "title": pl.Utf8, "content": pl.Utf8, "image": pl.Utf8},
    )


@pytest.fixture(params=["edge", "client-local"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """A StoreSpec for each real backend: Qdrant Edge and qdrant-client's local mode."""
    if request.param == "edge":
        return StoreSpec(collection="notes", workspace=tmp_path / "ws")
    return StoreSpec(collection="notes", local_path=tmp_path / "qdrant-local")


@pytest.fixture
def store(spec: StoreSpec) -> Iterator[VectorStore]:
    with open_store(spec) as s:
        yield s


@pytest.fixture(name="make_notes")
def make_notes_fixture() -> object:
    """The `make_notes(n, start=0)` builder, for tests that edit tables."""
    return make_notes
