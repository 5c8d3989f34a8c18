"""Helpers shared by CLI commands."""

from __future__ import annotations

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
