"""Check up front that a notes table's images load, before hours of work on blank ones.

A notes table whose `image` paths are relative to another folder than the image root
loads no image at all; training, indexing and evaluating on blank images then "work"
and produce a model that never saw a picture. `check_images` loads a seeded sample of
the images named in the table and reports how many load, with examples of the paths
tried; `require_images` stops with one line when more than a share of them fail.
Notes without an image path are counted apart (they are not failures).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.contracts import Note, resolve_image
from core.errors import UserError
from core.images import load_image

DEFAULT_SAMPLE = 200
DEFAULT_MAX_BAD_SHARE = 0.05


@dataclass
class ImageCheck:
    """What a sample of a notes table's images looked like."""

    image_root: str
    notes: int  # notes in the table
    with_image: int  # notes in the table that name an image
    sampled: int  # images tried
    loaded: int
    missing: int
    unreadable: int
    tried: list[str] = field(default_factory=list)  # a few paths tried (first ones)
    failed: list[str] = field(default_factory=list)  # a few failures: "path (missing)"

    @property
    def bad(self) -> int:
        return self.missing + self.unreadable

    @property
    def bad_share(self) -> float:
        return self.bad / self.sampled if self.sampled else 0.0

    def describe(self) -> str:
        """One line: how many of the sampled images load, from where, with examples."""
        if not self.with_image:
            return f"images: none of the {self.notes:,} notes names an image (image root {self.image_root})"
        examples = self.failed or self.tried
        return (
            f"images: {self.loaded:,} of {self.sampled:,} sampled load ({self.bad_share:.0%} fail; "
            f"{self.with_image:,} of {self.notes:,} notes name one) from image root {self.image_root}; "
            f"e.g. {'; '.join(examples[:2])}"
        )


def check_images(
    notes: Sequence[Note],
    image_root: str | Path | None,
    *,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    max_side: int = 64,
) -> ImageCheck:
    """Try to load up to `sample` of the notes' images (a seeded sample) from `image_root`."""
    named = [n for n in notes if n.get("image")]
    chosen = random.Random(seed).sample(named, min(sample, len(named)))
    check = ImageCheck(
        image_root=str(image_root) if image_root is not None else "(none)",
        notes=len(notes),
        with_image=len(named),
        sampled=len(chosen),
        loaded=0,
        missing=0,
        unreadable=0,
    )
    for note in chosen:
        path = resolve_image(note["image"], image_root)
        assert path is not None  # `named` holds notes with an image path
        if len(check.tried) < 3:
            check.tried.append(str(path))
        if not path.exists():
            check.missing += 1
            problem = "missing"
        elif not load_image(path, max_side=max_side)[1]:
            check.unreadable += 1
            problem = "unreadable"
        else:
            check.loaded += 1
            continue
        if len(check.failed) < 3:
            check.failed.append(f"{path} ({problem})")
    return check


def require_images(check: ImageCheck, max_bad_share: float = DEFAULT_MAX_BAD_SHARE) -> None:
    """Raise `UserError` when more than `max_bad_share` of the sampled images fail.

    The message names the image root, an example path and the two ways out.
    """
    if check.sampled and check.bad_share > max_bad_share:
        raise UserError(
            f"{check.bad:,} of {check.sampled:,} sampled images ({check.bad_share:.0%}) do not load from "
            f"image root {check.image_root} (e.g. {check.failed[0]}), more than --max-bad-images "
            f"{max_bad_share:g}; point the image root at the folder the notes' image paths start from, "
            "or pass --max-bad-images 1 to go on with blank images"
        )
