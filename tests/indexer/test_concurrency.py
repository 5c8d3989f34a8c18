"""Many `i2i related` processes on one embedded workspace, and a read-only workspace."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import UserError
from indexer.backends import StoreSpec, open_store
from indexer.edge import EdgeStore
from indexer.job import index_notes
from indexer.testing import HashingEmbedder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path: Path, make_notes) -> Path:
    notes = tmp_path / "notes.parquet"
    make_notes(200).write_parquet(notes)
    ws = tmp_path / "ws"
    with open_store(StoreSpec(workspace=ws)) as store:
        index_notes(notes, HashingEmbedder(), store)
    return ws


def related_process(ws: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "i2i.cli", "related", "n0007", "-k", "3", "--json", "--workspace", str(ws)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_eight_concurrent_related_calls_all_succeed(workspace: Path) -> None:
    procs = [related_process(workspace) for _ in range(8)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, err
        assert [r["rank"] for r in json.loads(out)["related"]] == [1, 2, 3]
    assert len({out for _, out, _ in results}) == 1  # the same answer every time


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` read-only for this process: permissions, or a read-only bind mount
    for root (whom permissions do not stop)."""
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        for p in paths:
            p.chmod(p.stat().st_mode & ~0o222)
        try:
            yield
        finally:
            for p in paths:
                p.chmod(p.stat().st_mode | 0o200)
        return
    mount = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, check=False)
    if mount.returncode != 0:
        pytest.skip(f"running as root without permission to bind-mount: {mount.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


def test_a_read_only_workspace_still_answers(workspace: Path) -> None:
    with read_only(workspace):
        proc = related_process(workspace)
        code = proc.wait(timeout=120)
        out, err = proc.communicate()
        assert code == 0, err
        assert len(json.loads(out)["related"]) == 3
        store = EdgeStore(workspace / "qdrant" / "notes")
        try:
            assert store.count() == 200 and store.read_only
            with pytest.raises(UserError, match="read-only; it can be queried but not changed"):
                store.delete(["x"])
        finally:
            store.close()
