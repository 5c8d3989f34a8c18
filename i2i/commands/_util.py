"""Helpers shared by CLI commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from core.errors import UserError

Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Write into an output directory that holds other files; only this command's own files change.",
    ),
]


def not_yet(command: str, issue: int) -> NoReturn:
    """Stand-in body for a command whose implementation lands with a later issue."""
    raise UserError(f"`i2i {command}` is not implemented yet (it lands with issue {issue})")


MaxBadImages = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Stop before any work when more than this share of a sample of the notes' images "
        "do not load (1: go on with blank images).",
    ),
]


def images_up_front(notes: Path | str, image_root: Path | str | None, max_bad_share: float) -> None:
    """Load a sample of the notes' images; print how many load; stop above `max_bad_share`.

    Prints one dim line on stdout (rank 0 only under torchrun); raises `UserError`
    naming the image root and an example path when too many fail.
    """
    from rich.console import Console

    from core.contracts import notes_to_dicts, read_notes
    from core.image_check import check_images, require_images

    notes = Path(notes)
    root = Path(image_root) if image_root is not None else notes.parent
    check = check_images(notes_to_dicts(read_notes(notes)), root)
    if int(os.environ.get("RANK", "0")) == 0:  # progress goes to stdout; stderr is for errors
        Console().print(f"[dim]{check.describe()}[/]", highlight=False, soft_wrap=True)
    require_images(check, max_bad_share)
