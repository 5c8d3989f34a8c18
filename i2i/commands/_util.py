"""Helpers shared by CLI commands."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from core.errors import UserError

Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Write into an output directory that holds other files; only this command's own files change.",
    ),
]


InferencePrecision = Annotated[
    str,
    typer.Option(
        help="Embedding precision: auto (bf16 on CUDA, fp32 on CPU) | bf16 (CUDA, or a CPU with "
        "native bf16: about 2x faster there, vectors within bf16 rounding) | fp32."
    ),
]


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


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: what failed, on which path(s), and the system's reason."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(str(p) for p in paths)
    return f"{where}: {reason}" if where else reason


def print_error(message: str) -> None:
    """The one red line every failure a user can act on ends with."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a `UserError` or an `OSError` into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print_error(str(exc))
            raise typer.Exit(code=2) from None
        except OSError as exc:
            if os.environ.get("I2I_DEBUG"):
                raise
            print_error(os_error_message(exc))
            raise typer.Exit(code=2) from None

    return wrapper
