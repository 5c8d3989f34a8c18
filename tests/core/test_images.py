"""`core.images` opens only regular files; `resolve_image(confine=True)` stays in the root."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from PIL import Image

from core.contracts import resolve_image
from core.images import load_image


def load_with_deadline(path: Path, seconds: float = 10.0) -> tuple[Image.Image, bool]:
    """`load_image` in a thread; a test failure instead of a hung suite if it blocks."""
    result: list[tuple[Image.Image, bool]] = []
    worker = threading.Thread(target=lambda: result.append(load_image(path)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"load_image({path}) still blocked after {seconds} s"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_a_fifo_is_a_bad_image_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    image, ok = load_with_deadline(fifo)
    assert not ok and image.size == (224, 224)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_a_bad_image() -> None:
    assert load_with_deadline(Path("/dev/zero"))[1] is False


def test_a_symlink_to_a_regular_image_still_loads(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "real.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    image, ok = load_image(tmp_path / "link.png")
    assert ok and image.getpixel((0, 0)) == (255, 0, 0)


def test_confined_paths_never_leave_the_image_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "images" / "escape.png").symlink_to(tmp_path / "secret.png")
    assert resolve_image("images/a.png", root, confine=True) == root / "images" / "a.png"
    for bad in ("/etc/passwd", "../secret.png", "images/../../secret.png", "images/escape.png"):
        assert resolve_image(bad, root, confine=True) is None, bad
        assert resolve_image(bad, root) is not None  # the default trusts the notes table
    assert resolve_image("a.png", None, confine=True) is None


def test_images_from_bytes_decode_like_files() -> None:
    import io

    from core.images import load_image_bytes

    buf = io.BytesIO()
    Image.new("RGBA", (2000, 500), (0, 0, 255, 0)).save(buf, format="PNG")
    image, ok = load_image_bytes(buf.getvalue(), max_side=400)
    assert ok and image.mode == "RGB" and image.size == (400, 100)
    assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, as for files
    for bad in (b"", b"not an image", buf.getvalue()[:100]):
        image, ok = load_image_bytes(bad)
        assert not ok and image.size == (224, 224)
