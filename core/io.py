"""Atomic writes: a crash leaves the previous output intact, never a half-written one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    Works for files and for directories (the temporary path does not exist yet; the
    caller creates what it needs there). A directory is replaced as a whole, so use it
    only for a directory the caller owns entirely (a checkpoint); a command's output
    directory, which may hold other files, goes through `core.outputs.output_dir`. A file
    never replaces a directory. On an exception the temporary is removed and `path` is
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / "out"
    try:
        yield target
        if path.is_dir() and not path.is_symlink() and not target.is_dir():
            raise UserError(f"cannot write the file {path}: a directory of that name is in the way")
        if path.is_dir() and not path.is_symlink():
            # os.replace cannot replace a non-empty directory: swap via a side name.
            old = tmp / "old"
            os.replace(path, old)
            os.replace(target, path)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
