"""What "a note changed" means for incremental indexing.

A note is re-embedded when its `content_hash` differs from the one stored in its
point's payload. The hash covers everything the model sees:

- `title`, `content` and `tags` (after `#tag#` hashtags are merged in, in order);
- the `image` path as written in the notes table;
- the image file's size and modification time (nanoseconds), or "missing".

The file's bytes are not read: hashing every image on every run would cost a full read
of the corpus. Size + mtime catches any rewrite of the file; a mere `touch` or a copy
that resets mtimes triggers a harmless re-embed, never a stale vector.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from core.contracts import Note, resolve_image


def image_signature(image: str | None, image_root: str | Path | None) -> str | None:
    """`"size:mtime_ns"` of the note's image file, "missing", or None without an image."""
    path = resolve_image(image, image_root)
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def content_hash(note: Note, image_root: str | Path | None, image_bytes: bytes | None = None) -> str:
    """Stable hex digest of what the embedding of `note` depends on (see module docstring).

    `image_bytes`: the note's image itself (e.g. uploaded to `i2i serve`); its SHA-256
    stands in for the file signature and nothing is read from disk.
    """
    if image_bytes is not None:
        image, signature = "upload", "sha256:" + hashlib.sha256(image_bytes).hexdigest()
    else:
        image, signature = note.get("image"), image_signature(note.get("image"), image_root)
    key = [
        note.get("title") or "",
        note.get("content") or "",
        list(note.get("tags") or []),
        image,
        signature,
    ]
    blob = json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]
