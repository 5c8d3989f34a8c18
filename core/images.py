"""Safe image loading for corpora in the wild.

Real corpora hold files that are not images, truncated files, CMYK / paletted / alpha
images and huge images. `load_image` decodes with a size cap and never raises for a bad
file: it returns a blank image and `ok=False` so callers can count the failure.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

# Decode at most this many pixels; larger images are reduced while decoding (JPEG draft)
# or refused before decoding if the format cannot reduce.
MAX_DECODE_PIXELS = 64_000_000
BLANK_COLOR = (127, 127, 127)


def blank_image(size: int = 224) -> Image.Image:
    """A neutral grey RGB image used in place of a missing or broken one."""
    return Image.new("RGB", (size, size), BLANK_COLOR)


def load_image(path: str | Path | None, max_side: int = 1024) -> tuple[Image.Image, bool]:
    """Load `path` as an RGB image at most `max_side` on its long side.

    Returns `(image, ok)`; `ok` is False (and the image blank) when the path is None,
    missing, not an image, truncated, or too large to decode safely.
    """
    if path is None:
        return blank_image(), False
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_DECODE_PIXELS:
                im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
                if im.size[0] * im.size[1] > MAX_DECODE_PIXELS:
                    return blank_image(), False
            im.thumbnail((max_side, max_side))
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                canvas = Image.new("RGB", im.size, (255, 255, 255))
                canvas.paste(im, mask=im.getchannel("A"))
                return canvas, True
            return im.convert("RGB"), True
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return blank_image(), False
