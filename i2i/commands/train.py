"""`i2i train` (lands with issue 3)."""

from __future__ import annotations

from i2i.commands._util import not_yet


def command() -> None:
    """Not implemented yet (issue 3)."""
    not_yet("train", 3)
