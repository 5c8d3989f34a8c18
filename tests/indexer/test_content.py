"""`content_hash`: the key is written without json.dumps, and must not change by a byte."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from indexer.content import content_hash, content_hash_of


def _reference(note: dict, signature: str | None) -> str:
    """The original definition: SHA-256 of json.dumps of the key, first 32 hex digits."""
    key = [
        note.get("title") or "",
        note.get("content") or "",
        list(note.get("tags") or []),
        note.get("image"),
        signature,
    ]
    blob = json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def test_hash_is_the_json_key_hash(tmp_path: Path) -> None:
    rng = random.Random(7)
    chars = [
        "a",
        "Z",
        " ",
        '"',
        "\\",
        "/",
        "\n",
        "\t",
        "\x00",
        "\x1f",
        "\x7f",
        "é",
        "中",
        "😀",
        "\u2028",
        "#",
    ]

    def text() -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(0, 10)))

    (tmp_path / "a.png").write_bytes(b"x")
    for _ in range(2000):
        note = {
            "title": rng.choice([None, text()]),
            "content": rng.choice([None, text()]),
            "tags": rng.choice([None, [], [text() for _ in range(rng.randint(1, 3))]]),
            "image": rng.choice([None, "a.png", "gone.png", "sub dir/é.png"]),
        }
        got = content_hash(note, tmp_path)
        assert got == content_hash_of(note["title"], note["content"], note["tags"], note["image"], tmp_path)
        image = note["image"]
        sig = None
        if image:
            path = tmp_path / image
            sig = f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.exists() else "missing"
        assert got == _reference(note, sig)


@pytest.mark.parametrize("tags", [[1, "a"], ("a", "b"), ["a", None]])
def test_other_tag_types_hash_as_before(tags: object) -> None:
    note = {"title": "t", "content": "c", "tags": tags, "image": None}
    assert content_hash(note, None) == _reference(note, None)
