"""Safe image loading for corpora in the wild.

Real corpora hold files that are not images, truncated files, CMYK / paletted / alpha
images and huge images. `load_image` decodes with a size cap and never raises for a bad
file: it returns a blank image and `ok=False` so callers can count the failure. It opens
only regular files: a FIFO or a device named as an image would block a reader forever
(or stream without end), so it counts as a bad image.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from core.contracts import Note, resolve_image

# Decode at most this many pixels; larger images are reduced while decoding (JPEG draft)
# or refused before decoding if the format cannot reduce.
MAX_DECODE_PIXELS = 64_000_000
BLANK_COLOR = (127, 127, 127)


def blank_image(size: int = 224) -> Image.Image:
    """A neutral grey RGB image used in place of a missing or broken one."""
    return Image.new("RGB", (size, size), BLANK_COLOR)


def open_regular_file(path: str | Path) -> BinaryIO | None:
    """Open `path` for reading only if it is a regular file (symlinks followed); else None.

    The check is made on the opened descriptor (opened non-blocking, so a FIFO cannot
    block the open itself): a path swapped for a FIFO after a first look is still refused.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")
    except OSError:
        os.close(fd)
        return None


def load_image(path: str | Path | None, max_side: int = 1024) -> tuple[Image.Image, bool]:
    """Load `path` as an RGB image at most `max_side` on its long side.

    Returns `(image, ok)`; `ok` is False (and the image blank) when the path is None,
    missing, not a regular file, not an image, truncated, or too large to decode safely.
    """
    if path is None:
        return blank_image(), False
    handle = open_regular_file(path)
    if handle is None:
        return blank_image(), False
    with handle:
        return _decode(handle, max_side)


def load_image_bytes(data: bytes, max_side: int = 1024) -> tuple[Image.Image, bool]:
    """`load_image` for an image held in memory (e.g. uploaded to a server): the same
    size cap and never-raising contract, and no file is opened."""
    if not data:
        return blank_image(), False
    return _decode(io.BytesIO(data), max_side)


def _decode(source: BinaryIO, max_side: int) -> tuple[Image.Image, bool]:
    try:
        with Image.open(source) as im:
            w, h = im.size
            if w * h > MAX_DECODE_PIXELS:
                im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
                if im.size[0] * im.size[1] > MAX_DECODE_PIXELS:
                    return blank_image(), False
            im.thumbnail((max_side, max_side))
            if im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                canvas = Image.new("RGB", rgba.size, (255, 255, 255))
                canvas.paste(rgba, mask=rgba.getchannel("A"))
                return canvas, True
            return im.convert("RGB"), True
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return blank_image(), False


def note_image(
    note: Note, image_root: str | Path | None = None, *, confine: bool = False, max_side: int = 1024
) -> tuple[Image.Image, str]:
    """A note's image, decoded once, and its `core.contracts.IMAGE_STATUSES` value: "ok",
    "none" (no image), "missing" (no file at the path) or "unreadable"; every case but
    "ok" gives the blank image. `confine`: see `core.contracts.resolve_image`; `max_side`:
    see `load_image` (a small one makes a cheap readability check)."""
    path = resolve_image(note.get("image"), image_root, confine=confine)
    if path is None:
        return blank_image(), "none"
    if not path.exists():
        return blank_image(), "missing"
    image, ok = load_image(path, max_side=max_side)
    return image, "ok" if ok else "unreadable"


def given_image(image: Image.Image | None) -> tuple[Image.Image, str]:
    """An image the caller already decoded (None: the note has none), with its status."""
    return (blank_image(), "none") if image is None else (image, "ok")
