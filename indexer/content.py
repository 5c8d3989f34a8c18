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
import json.encoder
from collections.abc import Sequence
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
    image: str | None
    signature: str | None
    if image_bytes is not None:
        image, signature = "upload", "sha256:" + hashlib.sha256(image_bytes).hexdigest()
    else:
        image, signature = note.get("image"), image_signature(note.get("image"), image_root)
    return _digest(
        note.get("title") or "", note.get("content") or "", note.get("tags") or (), image, signature
    )


def content_hash_of(
    title: str | None,
    content: str | None,
    tags: Sequence[str] | None,
    image: str | None,
    image_root: str | Path | None,
) -> str:
    """`content_hash` of a note given as its fields (a notes table's columns, no dict per note)."""
    return _digest(title or "", content or "", tags or (), image, image_signature(image, image_root))


_encode = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a str


def _digest(title: str, content: str, tags: Sequence[str], image: str | None, signature: str | None) -> str:
    # The key is the JSON array [title, content, [tags...], image, signature] exactly as
    # json.dumps(..., ensure_ascii=False, separators=(",", ":")) writes it; strings (the
    # usual case) are written directly, about twice as fast as json.dumps.
    if (
        type(title) is str
        and type(content) is str
        and (image is None or type(image) is str)
        and all(type(t) is str for t in tags)
    ):
        blob = (
            f"[{_encode(title)},{_encode(content)},[{','.join(map(_encode, tags))}],"
            f"{'null' if image is None else _encode(image)},"
            f"{'null' if signature is None else _encode(signature)}]"
        )
    else:
        key = [title, content, list(tags), image, signature]
        blob = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
