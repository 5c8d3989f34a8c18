"""`i2i related` (lands with issue 4)."""

from __future__ import annotations

from i2i.commands._util import not_yet


def command() -> None:
    """Not implemented yet (issue 4)."""
    not_yet("related", 4)
