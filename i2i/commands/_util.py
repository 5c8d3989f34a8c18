"""Helpers shared by CLI commands."""

from __future__ import annotations

from typing import NoReturn

from core.errors import UserError


def not_yet(command: str, issue: int) -> NoReturn:
    """Stand-in body for a command whose implementation lands with a later issue."""
    raise UserError(f"`i2i {command}` is not implemented yet (it lands with issue {issue})")
