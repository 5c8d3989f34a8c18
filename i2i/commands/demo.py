"""`i2i demo` (lands with issue 5)."""

from __future__ import annotations

from i2i.commands._util import not_yet


def command() -> None:
    """Not implemented yet (issue 5)."""
    not_yet("demo", 5)
