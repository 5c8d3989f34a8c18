"""`i2i mine-pairs` (lands with issue 2)."""

from __future__ import annotations

from i2i.commands._util import not_yet


def command() -> None:
    """Not implemented yet (issue 2)."""
    not_yet("mine-pairs", 2)
