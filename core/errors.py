"""Errors a user can act on.

Library code raises `UserError` for bad input (a missing column, an unknown note id,
a file that cannot be read). The CLI prints its message as one line and exits with
code 2, without a traceback. Messages name the bad value, what was expected and the fix.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or configuration; the message says how to fix it."""
