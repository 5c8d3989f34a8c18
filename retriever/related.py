"""`related`: the top-k notes nearest to a note already in the collection.

The note's own stored vector is the query (retrieved by its point id), and the note
itself is excluded by id, so the answer never contains the note asked about. The same
two requests run on both backends (Edge has no query-by-id; doing it the same way on a
server keeps results identical and gives one clear "unknown note" path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import UserError
from indexer.store import VectorStore, point_id


@dataclass(frozen=True)
class Related:
    """One related note."""

    rank: int
    score: float
    note_id: str
    title: str

    def to_dict(self) -> dict[str, object]:
        # Spelled out: `dataclasses.asdict` deep-copies and costs more than a query.
        return {"rank": self.rank, "score": self.score, "note_id": self.note_id, "title": self.title}


MAX_DROPPED = 8  # more excluded ids than this go to the store as a filter


def related(store: VectorStore, note_id: str, k: int = 10) -> list[Related]:
    """Top-k notes related to `note_id`, best first; `UserError` if it is not indexed."""
    if k < 1:
        raise UserError(f"-k must be at least 1, got {k}")
    pid = point_id(note_id)
    found = store.retrieve([pid], with_vectors=True)
    if not found or found[0].vector is None:
        raise UserError(
            f"note {note_id!r} is not in {store.location} ({store.count()} notes); "
            "check the id, or index it with `i2i index`"
        )
    return related_to_vector(store, found[0].vector, k, exclude=[pid])


def related_to_vector(
    store: VectorStore, vector: np.ndarray, k: int, exclude: Sequence[str] = ()
) -> list[Related]:
    """Top-k notes nearest to `vector` (e.g. an unseen note's embedding), skipping the
    point ids in `exclude`, best first.

    A few ids (a note itself) are dropped from the top k + len(exclude) rather than
    filtered inside the search: the same answer for an exact search, and an HNSW search
    without a filter costs less (Qdrant Edge, 100k x 64: 213-218 against 246-248 us p50).
    """
    if 0 < len(exclude) <= MAX_DROPPED:
        skip = set(exclude)
        hits = [h for h in store.query(vector, k + len(skip)) if h.id not in skip][:k]
    else:
        hits = store.query(vector, k, exclude=exclude)
    return [
        Related(
            rank=i + 1,
            score=h.score,
            note_id=str(h.payload.get("note_id", "")),
            title=str(h.payload.get("title", "")),
        )
        for i, h in enumerate(hits)
    ]
