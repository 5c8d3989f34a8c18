"""Integration test against a real Qdrant server: runs only when I2I_QDRANT_URL is set.

    I2I_QDRANT_URL=http://localhost:6333 I2I_QDRANT_API_KEY=... pytest tests/indexer/test_server.py

Uses a throw-away collection and deletes it afterwards. (No server binary exists in
this project's CI image, so there it is skipped; the same code paths run against
qdrant-client's local mode in test_store.py and test_job.py.)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from indexer.backends import StoreSpec, open_store
from indexer.job import index_notes
from indexer.testing import HashingEmbedder
from retriever.related import related

URL = os.environ.get("I2I_QDRANT_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set I2I_QDRANT_URL to run against a real Qdrant server")


def test_index_and_related_on_a_server(tmp_path: Path, make_notes) -> None:
    spec = StoreSpec(
        collection=f"i2i-test-{uuid.uuid4().hex[:8]}",
        url=URL,
        api_key=os.environ.get("I2I_QDRANT_API_KEY"),
        shard_number=2,
    )
    notes = tmp_path / "notes.parquet"
    make_notes(300).write_parquet(notes)
    store = open_store(spec)
    try:
        first = index_notes(notes, HashingEmbedder(), store, batch_size=64)
        assert (first.collection, first.embedded, first.points) == ("created", 300, 300)
        again = index_notes(notes, HashingEmbedder(), store)
        assert (again.embedded, again.points) == (0, 300)
        with pytest.raises(UserError, match="refusing to mix"):
            index_notes(notes, HashingEmbedder(model_id="other"), store)
        top = related(store, "n0007", 5)
        assert len(top) == 5 and all(r.note_id != "n0007" for r in top)
        with pytest.raises(UserError, match="not in"):
            related(store, "no-such-note", 5)
        # Same answers as the embedded backend on the same data.
        with open_store(StoreSpec(workspace=tmp_path / "ws")) as edge:
            index_notes(notes, HashingEmbedder(), edge)
            expected = related(edge, "n0007", 5)
        np.testing.assert_allclose([r.score for r in top], [r.score for r in expected], atol=1e-5)
    finally:
        store.drop()
        store.close()
